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


def kaldi_utt_id(key: str, speaker: str) -> str:
    """Kaldi wants every utterance id to start with its speaker id (``utils/validate_data_dir.sh``:
    utt2spk sorted by utterance must also be sorted by speaker): ``<speaker>-<key>`` unless the key
    already starts that way."""
    return key if key.startswith(f"{speaker}-") else f"{speaker}-{key}"


def c_sorted(lines: list[str]) -> list[str]:
    """``LC_ALL=C sort`` order: by bytes."""
    return sorted(lines, key=lambda x: x.encode("utf-8"))


def write_table(path: str | Path, rows: Iterable[tuple[str, str]]) -> None:
    """A Kaldi table file (``key value`` lines), ``LC_ALL=C`` sorted by key, written atomically."""
    lines = c_sorted([f"{k} {v}\n" for k, v in rows])
    with atomic_open(path, "w") as f:
        f.writelines(lines)


def export_fbank_data_dirs(fbank_dir: str | Path, out_dir: str | Path, split: str | None = None) -> int:
    """An ``fbank`` stage directory -> one complete Kaldi data dir per split, ``OUT/<split>/``:
    ``wav.scp`` + ``segments`` + ``reco2dur`` (the source recordings and each digit's span in
    them), ``text``, ``utt2spk``, ``spk2utt``, ``feats.scp`` (pointing into the fbank stage's
    arks), ``cmvn.scp`` (its per-speaker statistics).  Records without a split go to ``all/``."""
    from .io_utils import read_jsonl

    src = Path(fbank_dir).resolve()
    records = read_jsonl(src / "features.jsonl")
    cmvn = {}
    if (src / "cmvn_speaker.scp").is_file():
        cmvn = dict(line.split(maxsplit=1) for line in (src / "cmvn_speaker.scp").read_text().splitlines() if line)
    by_split: dict[str, list[dict]] = {}
    for r in records:
        by_split.setdefault(r.get("split") or "all", []).append(r)
    if split is not None:
        if split not in by_split:
            raise ValueError(f"{src}: no {split!r} split (has {', '.join(sorted(by_split))})")
        by_split = {split: by_split[split]}
    total = 0
    for sp, recs in by_split.items():
        d = Path(out_dir) / sp
        d.mkdir(parents=True, exist_ok=True)
        reco: dict[str, str] = {}  # audio path -> recording id
        rows = {name: [] for name in ("wav.scp", "segments", "reco2dur", "text", "utt2spk", "feats.scp")}
        spk2utt: dict[str, list[str]] = {}
        for r in recs:
            spk = str(r.get("speaker") or "unknown")
            utt = kaldi_utt_id(r["id"], spk)
            audio = str(Path(r["audio"]).resolve())
            if audio not in reco:
                rid = kaldi_utt_id(f"rec-{Path(audio).stem}", spk)
                while rid in reco.values():
                    rid += "x"
                reco[audio] = rid
                rows["wav.scp"].append((rid, audio))
                rows["reco2dur"].append((rid, f"{r['num_samples'] / r['sample_rate']:.6f}"))
            start = float(r.get("start") or 0.0)
            end = float(r.get("end") or r["num_samples"] / r["sample_rate"])
            rows["segments"].append((utt, f"{reco[audio]} {start:.6f} {end:.6f}"))
            rows["text"].append((utt, r.get("transcript") or ""))
            rows["utt2spk"].append((utt, spk))
            path, _, offset = r["feats"].rpartition(":")
            rows["feats.scp"].append((utt, f"{(src / path).resolve()}:{offset}"))
            spk2utt.setdefault(spk, []).append(utt)
        for name, rr in rows.items():
            write_table(d / name, rr)
        write_table(d / "spk2utt", [(s, " ".join(c_sorted(u))) for s, u in spk2utt.items()])
        write_table(d / "cmvn.scp", [(s, cmvn[s].strip()) for s in spk2utt if s in cmvn])
        total += len(recs)
    return total
