"""LDC TIDIGITS: ``{train,test}/{man,woman,boy,girl}/<spk>/<digits><a|b>.wav`` (NIST SPHERE,
20 kHz), possibly under ``tidigits/`` or ``data/{adults,children}/``.  Ids, speakers and transcripts
as Kaldi's ``egs/tidigits/s5/local/tidigits_data_prep.sh``: id ``<spk>_<digits><a|b>`` (``ae_z1oa``),
transcript from the letters (``z`` -> zero, ``o`` -> oh)."""

from __future__ import annotations

import re
from pathlib import Path

from ..digits import CHAR_TO_WORD
from .common import SPLITS, Item, abspath, scan


TIDIGITS_GROUPS = ("man", "woman", "boy", "girl")
_SPK_RE = re.compile(r"^[A-Za-z0-9]+$")
_TIDIGITS_RE = re.compile(r"^([1-9zo]+)([ab])\.(?:wav|sph|flac)$", re.IGNORECASE)

def tidigits_roots(src: Path) -> list[Path]:
    """Directories holding ``train/``/``test/`` (Kaldi's layouts, plus children)."""

    def has_split(d: Path) -> bool:
        return any((d / s).is_dir() for s in SPLITS)

    for top in (src, src / "tidigits"):
        if has_split(top):
            return [top]
        data = top / "data"
        roots = [data / sub for sub in ("adults", "children") if has_split(data / sub)]
        if roots:
            return roots
    return []


def tidigits_items(cfg, out_dir: Path | None = None) -> tuple[list[Item], int]:
    src = Path(cfg.source)
    if not src.is_dir():
        raise FileNotFoundError(f"TIDIGITS source {cfg.source!r}: no such directory")
    roots = tidigits_roots(src)
    if not roots:
        raise FileNotFoundError(
            f"TIDIGITS source {cfg.source!r}: no train/ or test/ directory (also looked in tidigits/ and data/adults/)"
        )
    items: list[Item] = []
    ignored = 0
    for root in roots:
        for split in SPLITS:
            if not (root / split).is_dir():
                continue
            files, ign, bad = scan(root / split, recursive=True)
            ignored += ign
            items += [Item(abspath(p), reason=why) for p, why in bad]
            for p in files:
                rel = p.relative_to(root / split).parts
                m = _TIDIGITS_RE.match(p.name)
                if len(rel) != 3 or rel[0].lower() not in TIDIGITS_GROUPS or not _SPK_RE.match(rel[1]) or not m:
                    items.append(
                        Item(abspath(p), reason=f"bad name: expected {split}/{{man,woman,boy,girl}}/<spk>/<digits><a|b>.wav")
                    )
                    continue
                group, spk = rel[0].lower(), rel[1].lower()
                digits, ab = m.group(1).lower(), m.group(2).lower()
                items.append(
                    Item(
                        abspath(p),
                        id=f"{spk}_{digits}{ab}",
                        speaker=spk,
                        transcript=" ".join(CHAR_TO_WORD[c] for c in digits),
                        split=split,
                        extra={"group": group},
                    )
                )
    return items, ignored
