"""Kaldi ark/scp writing, in one place: the offset arithmetic and the CMVN-statistics layout.

An scp line points at ``ark_path:offset`` where ``offset`` is the first byte *after* ``key + " "``
(what ``kaldiio.load_mat`` and Kaldi's readers seek to).  Readers are kaldiio's.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterable

import kaldiio
import numpy as np

from .io_utils import atomic_open, atomic_path


def append_matrix(f: BinaryIO, key: str, mat: np.ndarray) -> int:
    """Write one ``key`` + binary matrix to an open ark; returns its scp offset."""
    offset = f.tell() + len(key.encode("utf-8")) + 1
    kaldiio.save_ark(f, {key: mat})
    return offset


def write_ark_scp(ark: str | Path, scp: str | Path, items: Iterable[tuple[str, np.ndarray]]) -> int:
    """``ark`` and its ``scp`` (absolute ark path), both written atomically, in the items' order.
    Returns the number of entries."""
    ark = Path(ark).resolve()
    lines = []
    with atomic_path(ark) as tmp:
        with open(tmp, "wb") as f:
            for key, mat in items:
                lines.append(f"{key} {ark}:{append_matrix(f, key, mat)}\n")
    with atomic_open(scp, "w") as f:
        f.writelines(lines)
    return len(lines)


def cmvn_stats(count: int, sums: np.ndarray, sumsq: np.ndarray) -> np.ndarray:
    """Kaldi's CMVN statistics matrix (``compute-cmvn-stats``): row 0 = [sum_0 .. sum_{D-1}, count],
    row 1 = [sumsq_0 .. sumsq_{D-1}, 0]."""
    sums = np.asarray(sums, dtype=np.float64)
    mat = np.zeros((2, len(sums) + 1))
    mat[0, :-1], mat[0, -1], mat[1, :-1] = sums, count, sumsq
    return mat
