"""CTM files (Kaldi ``lattice-align-words | nbest-to-ctm``, Montreal Forced Aligner): one word per line,

    <utterance> <channel> <start> <duration> <word> [<confidence>]

Times are seconds from the start of the utterance (Kaldi's convention; for an utterance that is a
whole file, as usual, that is the file's time).  Silence tokens (``<eps>``, ``sil``, ``sp``,
``<sil>``, ``!SIL``, ``SIL``, ``[noise]``-style brackets) are dropped on import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..io_utils import atomic_open

SILENCE_TOKENS = {"<eps>", "sil", "sp", "spn", "<sil>", "!sil", "<unk>", "<noise>", ""}


def is_silence(word: str) -> bool:
    w = word.lower()
    return w in SILENCE_TOKENS or (w.startswith("[") and w.endswith("]"))


def read_ctm(path: str | os.PathLike) -> tuple[dict[str, list[tuple[str, float, float]]], list[str]]:
    """``{utterance: [(word, start, end), ...]}`` sorted by start, and the malformed lines (as
    ``"line N: reason"``).  Word case is lowered."""
    out: dict[str, list[tuple[str, float, float]]] = {}
    bad: list[str] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith(";;"):
                continue
            if len(parts) not in (5, 6):
                bad.append(f"line {i}: expected 'utt channel start dur word [conf]', got {len(parts)} fields")
                continue
            utt, _, start, dur, word = parts[:5]
            try:
                s, d = float(start), float(dur)
            except ValueError:
                bad.append(f"line {i}: start/duration not numbers ({start!r}, {dur!r})")
                continue
            if not (s >= 0 and d >= 0) or s != s or d != d:
                bad.append(f"line {i}: negative or NaN start/duration")
                continue
            if is_silence(word):
                continue
            out.setdefault(utt, []).append((word.lower(), round(s, 6), round(s + d, 6)))
    for v in out.values():
        v.sort(key=lambda r: r[1])
    return out, bad


def write_ctm(path: str | os.PathLike, rows: Iterable[tuple[str, str, float, float, float | None]]) -> int:
    """Write ``(utterance, word, start, end, confidence)`` rows as CTM (channel 1, 3 decimals)."""
    n = 0
    with atomic_open(Path(path), "w", encoding="utf-8") as f:
        for utt, word, start, end, conf in rows:
            line = f"{utt} 1 {start:.3f} {end - start:.3f} {word}"
            if conf is not None:
                line += f" {conf:.3f}"
            f.write(line + "\n")
            n += 1
    return n
