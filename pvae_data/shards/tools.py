"""``info``, ``validate`` and ``export`` over a shard set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from ..io_utils import atomic_open, atomic_path
from ..kaldi_io import append_matrix, c_sorted, cmvn_stats, kaldi_utt_id, write_ark_scp
from ..io_utils import sha256_file
from .schema import AUDIO_DATASETS, IMAGE_DATASETS, SCHEMA_VERSION


def shard_info(directory: str | Path) -> dict:
    """Counts per split / label / speaker, frames, hours, bytes (from the shards, not the index)."""
    directory = Path(directory)
    index = json.loads((directory / "index.json").read_text())
    info: dict = {"modality": index["modality"], "schema_version": index["schema_version"],
                  "shards": len(index["shards"]), "bytes": 0, "splits": {}}
    shift_ms = (index.get("features") or {}).get("fbank", {}).get("frame_shift_ms", 10.0)
    for e in index["shards"]:
        sp = info["splits"].setdefault(e["split"], {"items": 0, "labels": Counter(), "speakers": Counter(),
                                                    "frames": 0, "bytes": 0})
        path = directory / e["file"]
        try:
            with h5py.File(path, "r") as f:
                labels = f["labels"][()]
                sp["items"] += len(labels)
                sp["labels"].update(labels.tolist())
                if "speakers" in f:
                    sp["speakers"].update(f["speakers"].asstr()[()].tolist())
                    sp["frames"] += int(f["feats"].shape[0])
        except (OSError, KeyError, ValueError) as err:  # h5py names neither the file nor the cause well
            raise ValueError(f"{path}: unreadable shard ({err}); run `pvae-data validate {directory}`") from None
        size = (directory / e["file"]).stat().st_size
        sp["bytes"] += size
        info["bytes"] += size
    for sp in info["splits"].values():
        sp["labels"] = {int(k): v for k, v in sorted(sp["labels"].items())}
        sp["speakers"] = dict(sorted(sp["speakers"].items()))
        sp["hours"] = round(sp["frames"] * shift_ms / 3.6e6, 4)
    if index.get("speakers"):  # which voices training hears and which the test holds out
        info["voices"] = index["speakers"]
    return info


def validate_shards(directory: str | Path) -> list[tuple[str, str]]:
    """Every problem as (file, reason); an empty list means the set is sound.

    Checks: index present and parseable, schema version, every listed shard present with the
    recorded size and sha256, HDF5 opens, required datasets, counts, offsets/lengths consistent
    with the frames, every record readable and finite, labels in 0..9, keys unique.
    """
    directory = Path(directory)
    problems: list[tuple[str, str]] = []
    ip = directory / "index.json"
    try:
        index = json.loads(ip.read_text())
    except FileNotFoundError:
        return [(str(ip), "missing (the shard set is incomplete)")]
    except json.JSONDecodeError as e:
        return [(str(ip), f"not valid JSON: {e.msg}")]
    if index.get("schema_version") != SCHEMA_VERSION:
        problems.append((str(ip), f"schema_version {index.get('schema_version')} != {SCHEMA_VERSION}"))
    modality = index.get("modality")
    if modality not in ("audio", "image"):
        return problems + [(str(ip), f"unknown modality {modality!r}")]
    all_keys: Counter = Counter()
    for e in index.get("shards", []):
        p = directory / e["file"]
        if not p.exists():
            problems.append((str(p), "missing"))
            continue
        if p.stat().st_size != e.get("bytes"):
            problems.append((str(p), f"size {p.stat().st_size} != {e.get('bytes')} in index (truncated or replaced)"))
        elif sha256_file(p) != e.get("sha256"):
            problems.append((str(p), "sha256 mismatch (corrupted)"))
        try:
            with h5py.File(p, "r") as f:
                problems += [(str(p), r) for r in _check_shard(f, modality, e, all_keys)]
        except Exception as ex:  # h5py raises OSError/KeyError/RuntimeError on damaged files
            problems.append((str(p), f"unreadable: {type(ex).__name__}: {ex}"))
    dup = [k for k, c in all_keys.items() if c > 1]
    if dup:
        problems.append((str(ip), f"{len(dup)} duplicate keys, e.g. {dup[:3]}"))
    return problems


def _check_shard(f: h5py.File, modality: str, entry: dict, all_keys: Counter) -> list[str]:
    need = AUDIO_DATASETS if modality == "audio" else IMAGE_DATASETS
    missing = need - set(f.keys())
    if missing:
        return [f"missing datasets {sorted(missing)}"]
    out = []
    if f.attrs.get("schema_version") != SCHEMA_VERSION:
        out.append(f"schema_version attribute {f.attrs.get('schema_version')}")
    n = entry["num_items"]
    for name in need - {"feats", "images"}:
        if len(f[name]) != n:
            out.append(f"{name} has {len(f[name])} entries, index says {n}")
    if out:
        return out
    labels = f["labels"][()]
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        out.append(f"labels out of range 0..9 (min {labels.min()}, max {labels.max()})")
    elif "labels" in entry and np.bincount(labels, minlength=10).tolist() != list(entry["labels"]):
        out.append(f"label histogram in index.json {list(entry['labels'])} != the file's "
                   f"{np.bincount(labels, minlength=10).tolist()}")
    keys = f["keys"].asstr()[()].tolist()
    all_keys.update(keys)
    if modality == "audio":
        offsets, lengths = f["offsets"][()], f["lengths"][()]
        total = f["feats"].shape[0]
        expect = np.concatenate([[0], np.cumsum(lengths[:-1])]) if n else np.zeros(0)
        if (lengths <= 0).any() or not np.array_equal(offsets, expect) or (n and offsets[-1] + lengths[-1] != total):
            out.append("offsets/lengths inconsistent with feats")
        else:
            feats = f["feats"]
            for i in range(0, n, 256):  # every record, read in blocks
                block = feats[offsets[i]:offsets[min(i + 256, n) - 1] + lengths[min(i + 256, n) - 1]]
                if not np.isfinite(block).all():
                    out.append(f"non-finite features near record {i} ({keys[i]})")
                    break
    else:
        from ..mnist import IMAGE_SHAPE

        imgs = f["images"]
        if imgs.shape[0] != n:
            out.append(f"images has {imgs.shape[0]} entries, index says {n}")
        elif tuple(imgs.shape[1:]) != IMAGE_SHAPE:
            out.append(f"images are {'x'.join(map(str, imgs.shape[1:]))}, expected {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}")
        else:
            imgs[()]  # every record readable
    return out


def export_kaldi(directory: str | Path, out_dir: str | Path, split: str | None = None) -> int:
    """Audio shards -> one Kaldi data directory per split, ``OUT/<split>/``: ``feats.scp`` +
    ``feats.ark``, ``cmvn.scp`` + ``cmvn.ark`` (per-speaker statistics, as ``compute-cmvn-stats
    --spk2utt``), ``utt2spk``, ``spk2utt``, ``text`` (the digit word), ``utt2label``; every file
    ``LC_ALL=C`` sorted, utterance ids prefixed with their speaker (:func:`kaldi_utt_id`).  Each
    split's directory is written whole, so exporting another split never leaves a mismatch.
    Returns the number of utterances written."""
    from ..digits import CHAR_TO_WORD
    from .reader import AudioShards
    from .schema import load_index

    _, index = load_index(directory)
    splits = [split] if split else sorted({e["split"] for e in index["shards"]})
    total = 0
    for sp in splits:
        shards = AudioShards(directory, sp)
        if len(shards) == 0:
            raise ValueError(f"{directory}: no {sp!r} split")
        d = Path(out_dir) / sp
        d.mkdir(parents=True, exist_ok=True)
        ids = [kaldi_utt_id(k, s) for k, s in zip(shards.keys, shards.speakers)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{directory}: duplicate utterance ids in split {sp!r}")
        order = sorted(range(len(ids)), key=lambda i: ids[i].encode("utf-8"))
        stats: dict[str, np.ndarray] = {}
        scp_lines = []
        ark = (d / "feats.ark").resolve()
        with atomic_path(ark) as tmp:
            with open(tmp, "wb") as f:
                for i in order:
                    item = shards[i]
                    scp_lines.append(f"{ids[i]} {ark}:{append_matrix(f, ids[i], item.feats)}\n")
                    x = item.feats.astype(np.float64)
                    stats[item.speaker] = stats.get(item.speaker, 0) + cmvn_stats(len(x), x.sum(0), (x * x).sum(0))
        write_ark_scp(d / "cmvn.ark", d / "cmvn.scp", ((spk, stats[spk]) for spk in c_sorted(list(stats))))
        spk2utt: dict[str, list[str]] = {}
        for i in order:
            spk2utt.setdefault(shards.speakers[i], []).append(ids[i])
        files = {
            "feats.scp": scp_lines,
            "utt2spk": [f"{ids[i]} {shards.speakers[i]}\n" for i in order],
            "spk2utt": [f"{spk} {' '.join(spk2utt[spk])}\n" for spk in c_sorted(list(spk2utt))],
            "text": [f"{ids[i]} {CHAR_TO_WORD[str(int(shards.labels[i]))]}\n" for i in order],
            "utt2label": [f"{ids[i]} {int(shards.labels[i])}\n" for i in order],
        }
        for name, lines in files.items():
            with atomic_open(d / name, "w") as f:
                f.writelines(lines)
        total += len(shards)
    return total
