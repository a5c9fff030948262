"""What every corpus reader shares: the ``Item`` it yields per input, and directory scanning
(every entry that looks like audio is an input; one that is not a readable file is an input
rejected with the reason, never skipped)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

SPLITS = ("train", "test")
#: Files with these extensions count as inputs when scanning a corpus directory; anything else
#: (README, .txt, ...) is skipped and only counted in ``PrepareSummary.ignored``.
AUDIO_EXTENSIONS = (".wav", ".sph", ".flac", ".nist")


@dataclass
class Item:
    """One input: what we know about it before looking at its audio."""

    path: str | None  # absolute path (None if a list entry has no usable path)
    id: str | None = None
    speaker: str | None = None
    transcript: str | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)  # corpus-specific record fields (e.g. "group")
    notes: list = field(default_factory=list)  # fix-ups made to the input
    reason: str | None = None  # set => rejected
    line: int | None = None  # list corpus: line in the list file


def abspath(p: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(p))


def not_a_file(p: Path) -> str | None:
    """Why an entry with an audio extension cannot be read as one (None: a regular file)."""
    import errno
    import stat

    try:
        mode = p.stat().st_mode  # follows symlinks
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return "dangling symlink (target missing)" if p.is_symlink() else f"unreadable entry ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a directory, not an audio file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def scan(directory: Path, recursive: bool) -> tuple[list[Path], int, list[tuple[Path, str]]]:
    """Audio-extension files under ``directory`` (sorted), the count of other files, and the
    entries that look like input but are not readable files (dangling symlinks, symlink loops,
    directories named ``*.wav``...) with the reason, so that the stage can reject them."""
    found: list[Path] = []
    bad: list[tuple[Path, str]] = []
    ignored = 0
    it: Iterable[Path] = directory.rglob("*") if recursive else directory.iterdir()
    for p in it:
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files / dirs (.DS_Store, .git, our own .tmp files)
        looks_like_audio = p.suffix.lower() in AUDIO_EXTENSIONS
        why = not_a_file(p)
        if why is None:
            if looks_like_audio:
                found.append(p)
            else:
                ignored += 1
        elif looks_like_audio:
            bad.append((p, why))
        elif why != "a directory, not an audio file":
            ignored += 1
    found.sort(key=lambda q: q.as_posix())
    bad.sort(key=lambda q: q[0].as_posix())
    return found, ignored, bad
