"""Free Spoken Digit Dataset: ``recordings/{digit}_{speaker}_{take}.wav``.  Utterance id
``{speaker}-{digit}-{take:02d}`` (speaker-prefixed, as Kaldi wants); the official split puts takes
0-4 in ``test`` and the rest in ``train``."""

from __future__ import annotations

import re
from pathlib import Path

from ..digits import CHAR_TO_WORD
from .common import Item, abspath, scan


_FSDD_RE = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$", re.IGNORECASE)
_SPK_RE = re.compile(r"^[A-Za-z0-9]+$")

def fsdd_items(cfg, out_dir: Path | None = None) -> tuple[list[Item], int]:
    src = Path(cfg.source)
    rec = src / "recordings" if (src / "recordings").is_dir() else src
    if not rec.is_dir():
        raise FileNotFoundError(f"FSDD source {cfg.source!r}: no such directory")
    files, ignored, bad = scan(rec, recursive=False)
    items = [Item(abspath(p), reason=why) for p, why in bad]
    for p in files:
        m = _FSDD_RE.match(p.name)
        if not m:
            items.append(Item(abspath(p), reason="bad name: expected {digit}_{speaker}_{take}.wav"))
            continue
        digit, speaker, take = m.group(1), m.group(2), int(m.group(3))
        items.append(
            Item(
                abspath(p),
                id=f"{speaker}-{digit}-{take:02d}",
                speaker=speaker,
                transcript=CHAR_TO_WORD[digit],
                split="test" if take <= cfg.fsdd_test_max_take else "train",
            )
        )
    return items, ignored
