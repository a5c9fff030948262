"""Utterance, recording and speaker ids from files made elsewhere, checked before they are used.

An id names a line in a Kaldi table and, in some stages, a file (``OUT/wav/<recording>.wav``,
``segment --write-audio``'s ``<utterance>.wav``).  Kaldi's own rule is "no whitespace"; ours adds
what makes a name safe as a file name: no path separator, not ``.`` or ``..``, no control
character, at most 200 characters.  :func:`id_problem` says what is wrong with an id (the reason
a stage writes into ``rejected.jsonl``); :func:`id_path` is the one way an id becomes a path.
"""

from __future__ import annotations

from pathlib import Path

MAX_ID_LENGTH = 200  # file systems allow 255 bytes per name; room for a suffix


def id_problem(value, what: str = "id") -> str | None:
    """None for a usable id, else a one-line reason naming ``what`` and the value."""
    if not isinstance(value, str) or not value:
        return f"bad {what}: {value!r} (must be a non-empty string)"
    if any(c.isspace() for c in value):
        return f"bad {what}: {value!r} (must not contain whitespace: Kaldi tables split on it)"
    if "/" in value or "\\" in value:
        return f"bad {what}: {value!r} (must not contain a path separator)"
    if value in (".", ".."):
        return f"bad {what}: {value!r} (must not be '.' or '..')"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"bad {what}: {value!r} (must not contain control characters)"
    if len(value.encode("utf-8")) > MAX_ID_LENGTH:
        return f"bad {what}: {value[:40]!r}... ({len(value.encode('utf-8'))} bytes; at most {MAX_ID_LENGTH})"
    return None


def id_path(directory: str | Path, value: str, suffix: str = "") -> Path:
    """``directory / (value + suffix)``, refused (``ValueError``) unless ``value`` is a usable id:
    the result is always a direct child of ``directory``."""
    problem = id_problem(value)
    if problem:
        raise ValueError(problem)
    path = Path(directory) / f"{value}{suffix}"
    if path.parent != Path(directory) or path.name in (".", ".."):  # belt and braces
        raise ValueError(f"bad id: {value!r} (not a plain file name)")
    return path
