"""Kaldi ark/scp writing, in one place: the offset arithmetic and the CMVN-statistics layout.

An scp line points at ``ark_path:offset`` where ``offset`` is the first byte *after* ``key + " "``
(what ``kaldiio.load_mat`` and Kaldi's readers seek to).  Readers are kaldiio's.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

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


def write_data_dir(d: str | Path, records: list[dict], features_dir: Path, prefix_ids: bool = True,
                   with_feats: bool = True) -> None:
    """The Kaldi data-dir files for ``records`` (``features.jsonl`` records of ``features_dir``) in
    ``d``: ``wav.scp`` + ``segments`` + ``reco2dur`` (source recordings and each utterance's span),
    ``text``, ``utt2spk``, ``spk2utt``, ``cmvn.scp`` (the stage's per-speaker statistics) and,
    with ``with_feats``, ``feats.scp``; all ``LC_ALL=C`` sorted.  ``prefix_ids``: utterance ids
    get their speaker as prefix (:func:`kaldi_utt_id`)."""
    d = Path(d)
    src = Path(features_dir).resolve()
    cmvn = {}
    if (src / "cmvn_speaker.scp").is_file():
        # the stage wrote absolute ark paths; the ark is found where the stage directory is now
        # (it may have been moved or copied since)
        for _, spk, where in table_lines(src / "cmvn_speaker.scp"):
            ark, _, offset = where.rpartition(":")
            cmvn[spk] = f"{src / Path(ark).name}:{offset}"
    reco: dict[str, str] = {}  # audio path -> recording id
    names = ("wav.scp", "segments", "reco2dur", "text", "utt2spk") + (("feats.scp",) if with_feats else ())
    rows: dict[str, list] = {name: [] for name in names}
    spk2utt: dict[str, list[str]] = {}
    for r in records:
        spk = str(r.get("speaker") or "unknown")
        utt = kaldi_utt_id(r["id"], spk) if prefix_ids else r["id"]
        audio = str(Path(r["audio"]).resolve())
        if audio not in reco:
            rid = kaldi_utt_id(f"rec-{Path(audio).stem}", spk)
            while rid in reco.values():
                rid += "x"
            reco[audio] = rid
            rows["wav.scp"].append((rid, audio))
            if r.get("num_samples") and r.get("sample_rate"):
                rows["reco2dur"].append((rid, f"{r['num_samples'] / r['sample_rate']:.6f}"))
        start = float(r.get("start") or 0.0)
        end = r.get("end")
        # Kaldi's segments: an end of -1 means "to the end of the recording"
        rows["segments"].append((utt, f"{reco[audio]} {start:.6f} " + (f"{float(end):.6f}" if end is not None else "-1")))
        rows["text"].append((utt, r.get("transcript") or ""))
        rows["utt2spk"].append((utt, spk))
        if with_feats:
            path, _, offset = r["feats"].rpartition(":")
            rows["feats.scp"].append((utt, f"{(src / path).resolve()}:{offset}"))
        spk2utt.setdefault(spk, []).append(utt)
    if len(rows["reco2dur"]) != len(rows["wav.scp"]):  # all or nothing (lhotse checks the counts)
        del rows["reco2dur"]
    d.mkdir(parents=True, exist_ok=True)
    for name, rr in rows.items():
        write_table(d / name, rr)
    write_table(d / "spk2utt", [(s, " ".join(c_sorted(u))) for s, u in spk2utt.items()])
    write_table(d / "cmvn.scp", [(s, cmvn[s].strip()) for s in spk2utt if s in cmvn])


def export_fbank_data_dirs(fbank_dir: str | Path, out_dir: str | Path, split: str | None = None) -> int:
    """An ``fbank`` stage directory -> one complete Kaldi data dir per split, ``OUT/<split>/``
    (:func:`write_data_dir`, ids speaker-prefixed).  Records without a split go to ``all/``."""
    from .io_utils import read_jsonl

    src = Path(fbank_dir).resolve()
    by_split: dict[str, list[dict]] = {}
    for r in read_jsonl(src / "features.jsonl"):
        by_split.setdefault(r.get("split") or "all", []).append(r)
    if split is not None:
        if split not in by_split:
            raise ValueError(f"{src}: no {split!r} split (has {', '.join(sorted(by_split))})")
        by_split = {split: by_split[split]}
    for sp, recs in by_split.items():
        write_data_dir(Path(out_dir) / sp, recs, src)
    return sum(len(r) for r in by_split.values())


def table_lines(path: str | Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, key, rest of line)`` per non-empty line of a Kaldi table file.  Key and value
    are split on any whitespace, tabs too, as Kaldi does.  A key given twice is an error naming the
    file and line (Kaldi's validate_data_dir.sh refuses it too): which line to believe is not ours to
    guess, and dropping one would lose an input silently."""
    seen: set[str] = set()
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, *rest = line.split(maxsplit=1)
        if key in seen:
            raise ValueError(f"{path}:{i}: duplicate key {key!r} (first on an earlier line)")
        seen.add(key)
        yield i, key, rest[0].strip() if rest else ""


def read_table(path: str | Path) -> dict[str, str]:
    """A Kaldi table file as ``{key: rest of line}`` (:func:`table_lines`)."""
    return {key: value for _, key, value in table_lines(path)}


class FeatsTable:
    """A Kaldi ``feats.scp`` read as data: ``table[key]`` is the matrix, read with kaldiio when asked.

    Kaldi lets an entry be a command (``compute-fbank-feats ... |``) or standard input (``-``); a
    file from elsewhere could then run anything.  Such entries are refused, naming the file and
    line, unless ``allow_commands`` (``--allow-commands`` on the command line).  A matrix that
    cannot be read is a ``ValueError`` naming the table, the key and where it points."""

    def __init__(self, scp: str | Path, allow_commands: bool = False):
        self.scp = Path(scp)
        self.where: dict[str, str] = {}
        for i, key, value in table_lines(self.scp):
            if not value:
                raise ValueError(f"{self.scp}:{i}: {key!r} has no rxfilename")
            if (value.endswith("|") or value == "-" or value.startswith("- ")) and not allow_commands:
                raise ValueError(f"{self.scp}:{i}: {key!r} is a command ({value[:60]!r}); commands in a "
                                 f"feats.scp run only with --allow-commands (they run with your permissions)")
            self.where[key] = value
        self._table = kaldiio.load_scp(str(self.scp))

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.where:
            raise KeyError(f"{self.scp}: no entry {key!r}")
        try:
            m = np.asarray(self._table[key])
        except Exception as e:  # kaldiio raises bare AssertionError, UnicodeDecodeError, OSError...
            msg = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{self.scp}: {key!r}: cannot read the matrix at {self.where[key][:80]!r} "
                             f"({type(e).__name__}: {msg[:120]})") from None
        if m.ndim != 2:
            raise ValueError(f"{self.scp}: {key!r}: not a matrix (shape {m.shape})")
        return m
