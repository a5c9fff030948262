"""The digit-word vocabulary and transcript normalisation.

Eleven words: ``zero oh one two ... nine``.  "oh" and "zero" are distinct *words* (they sound
different and TIDIGITS transcribes them separately) but share the *label* 0.
"""

from __future__ import annotations

WORDS: tuple[str, ...] = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_WORD_LABEL: dict[str, int] = {w: (0 if w in ("zero", "oh") else i - 1) for i, w in enumerate(WORDS)}

#: Single characters accepted as digits: "0"-"9", and the TIDIGITS letters "z" (zero) and "o" (oh).
CHAR_TO_WORD: dict[str, str] = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "z": "zero",
    "o": "oh",
}


def word_to_label(word: str) -> int:
    """Label 0-9 of a digit word (case-insensitive); "oh" and "zero" are both 0."""
    try:
        return _WORD_LABEL[word.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"not a digit word: {word!r} (expected one of {', '.join(WORDS)})") from None


def normalize_transcript(text: str) -> list[str]:
    """Turn a transcript into a list of lower-case digit words.

    Whitespace-separated tokens, each either a digit word (any case) or a run of digit
    characters (``"0"``-``"9"``, TIDIGITS ``"z"``/``"o"``) that expands one word per character:
    ``"one oh seven"``, ``"1 0 7"``, ``"107"`` and ``"1o7"`` all work (the last two give
    ``zero``/``oh`` respectively for the middle digit).  Raises ``ValueError`` naming the first
    bad token, or on an empty transcript.
    """
    if not isinstance(text, str):
        raise ValueError(f"transcript must be a string, got {type(text).__name__}")
    tokens = text.split()
    if not tokens:
        raise ValueError("empty transcript")
    words: list[str] = []
    for tok in tokens:
        low = tok.lower()
        if low in _WORD_LABEL:
            words.append(low)
        elif all(c in CHAR_TO_WORD for c in low):
            words.extend(CHAR_TO_WORD[c] for c in low)
        else:
            raise ValueError(f"bad transcript token {tok!r} in {text!r}: not a digit word or digit string")
    return words


def transcript_words(record: dict) -> list[str]:
    """A manifest record's transcript as lower-case words (``""`` or missing: no words)."""
    return str(record.get("transcript") or "").lower().split()
