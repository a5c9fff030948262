"""The ``shard`` stage: features or images -> HDF5 shards + ``index.json`` (a public format).

One HDF5 file per shard, one split per shard, in the format of :mod:`pvae_data.shards.schema`
(``docs/shards.md``), written by :mod:`pvae_data.shards.writer`.

``index.json`` (written last, atomically) lists every shard with its split, counts, bytes and
sha256, plus the schema version and the config.  Each shard is written under a temporary name
and renamed when complete; ``.progress/<shard>.json`` records its plan and checksum, so a rerun
after a kill verifies and keeps finished shards and redoes only the rest.

Determinism: same input, config and seed give byte-identical shards (HDF5 time stamps are off,
the order is a seeded permutation, nothing depends on the clock or the number of workers).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..digits import normalize_transcript, word_to_label
from ..kaldi_io import FeatsTable
from ..io_utils import read_jsonl, remove_stale_temps, sha256_file, write_json, write_jsonl
from ..shards.schema import SCHEMA_VERSION
from ..shards.writer import ShardConfig, write_audio_shard, write_image_shard
from ..stage import StageSummary, Timer, progress


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Planning: which items go to which shard
# --------------------------------------------------------------------------------------------


def _plan(items: list[dict], sizes: list[int], cfg: ShardConfig) -> list[list[int]]:
    """Split ``items`` (one split) into shards of at most max_items / max_bytes (>= 1 item each)."""
    order = np.arange(len(items))
    if cfg.shuffle:
        order = np.random.default_rng(cfg.seed).permutation(len(items))
    shards, cur, cur_bytes = [], [], 0
    for i in order.tolist():
        full = (cfg.max_items and len(cur) >= cfg.max_items) or (cur and cur_bytes + sizes[i] > cfg.max_bytes)
        if full:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_bytes += sizes[i]
    if cur:
        shards.append(cur)
    return shards


def _by_split(records: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        out.setdefault(r.get("split") or "all", []).append(i)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# The stage driver, shared by audio and images
# --------------------------------------------------------------------------------------------


def _run(out: Path, modality: str, plan: dict[str, list[list[int]]], write_one: Callable[[Path, str, list[int]], dict],
         index_extra: dict, cfg: ShardConfig, show_progress: bool) -> tuple[int, int]:
    """Write every planned shard (reusing verified ones) then ``index.json``; returns (written, reused)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ".progress").mkdir(exist_ok=True)
    remove_stale_temps(out)
    stale = out / "index.json"
    if stale.exists():
        stale.unlink()  # the index is rewritten last; until then the set is incomplete
    total = sum(len(s) for shards in plan.values() for s in shards)
    bar = progress(total, f"shard {modality}", show_progress, unit="item")
    entries, written, reused = [], 0, 0
    for split, shards in plan.items():
        for n, members in enumerate(shards):
            name = f"{split}-{n:05d}.h5"
            path, side = out / name, out / ".progress" / f"{name}.json"
            plan_id = _digest({"members": members, "index_extra": index_extra, "config": cfg.to_dict()})
            entry = None
            if path.exists() and side.exists():
                rec = json.loads(side.read_text())
                if rec.get("plan") == plan_id and rec.get("bytes") == path.stat().st_size and \
                        rec.get("sha256") == sha256_file(path):
                    entry, reused = rec["entry"], reused + 1
            if entry is None:
                stats = write_one(path, split, members)
                entry = {"file": name, "split": split, "num_items": len(members), **stats,
                         "bytes": path.stat().st_size, "sha256": sha256_file(path)}
                write_json(side, {"plan": plan_id, "bytes": entry["bytes"], "sha256": entry["sha256"], "entry": entry})
                written += 1
            entries.append(entry)
            bar.update(len(members))
    bar.close()
    keep = {e["file"] for e in entries}
    for p in out.glob("*.h5"):  # shards of an earlier, different plan
        if p.name not in keep:
            p.unlink()
    index = {"schema_version": SCHEMA_VERSION, "modality": modality, "config": cfg.to_dict(),
             "shards": entries, **index_extra}
    write_json(out / "index.json", index)
    return written, reused


def _audio_label(r: dict) -> int | None:
    if "label" in r and r["label"] is not None:
        return int(r["label"])
    try:
        words = normalize_transcript(str(r.get("transcript", "")))
    except ValueError:
        return None
    return word_to_label(words[0]) if len(words) == 1 else None


def shard_audio(features_dir: str | Path, out_dir: str | Path, cfg: ShardConfig = ShardConfig(),
                show_progress: bool = True, allow_no_cmvn: bool = False) -> StageSummary:
    """Pack a *finished* ``pvae-data fbank`` output directory into audio shards.

    Refuses a directory whose merge did not complete, and one without global CMVN statistics
    (a model trained on it would see raw FBank) unless ``allow_no_cmvn``."""
    from .fbank import check_complete

    features_dir = Path(features_dir)
    check_complete(features_dir)
    wanted = ("id", "feats", "num_frames", "feat_dim", "label", "transcript", "speaker", "split", "perturbed_from")
    records = [{k: r[k] for k in wanted if k in r} for r in read_jsonl(features_dir / "features.jsonl")]
    fcfg = json.loads((features_dir / "fbank_config.json").read_text())
    cmvn_path = features_dir / "cmvn.json"
    cmvn = json.loads(cmvn_path.read_text()) if cmvn_path.exists() else None
    if not (cmvn or {}).get("global") and not allow_no_cmvn:
        raise ValueError(f"{features_dir}: no global CMVN statistics (cmvn.json; no frames of the CMVN split?); "
                         "pass --no-cmvn to shard unnormalised features anyway")

    with ArkReader(features_dir) as arks:
        return _shard_audio_records(records, arks.load, out_dir, cfg, feature_config=fcfg["config"],
                                    source_sha256=fcfg.get("manifest_sha256", ""), cmvn=cmvn,
                                    show_progress=show_progress, trim=fcfg.get("trim"))


class ArkReader:
    """Reads ``feats`` references (``arks/x.ark:offset``) keeping each ark open once."""

    def __init__(self, root: Path):
        self.root, self.files = root, {}

    def load(self, r: dict) -> np.ndarray:
        from kaldiio.matio import read_kaldi

        path, offset = r["feats"].rsplit(":", 1)
        f = self.files.get(path)
        if f is None:
            f = self.files[path] = open(self.root / path, "rb")
        f.seek(int(offset))
        return read_kaldi(f)

    def __enter__(self) -> "ArkReader":
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files.values():
            f.close()


def shard_kaldi(scp: str | Path, labels: str | Path, out_dir: str | Path, cfg: ShardConfig = ShardConfig(),
                utt2spk: str | Path | None = None, split: str | None = None, show_progress: bool = True,
                cmvn_split: str = "train", allow_no_cmvn: bool = False,
                allow_commands: bool = False) -> StageSummary:
    """Pack Kaldi features (any ``feats.scp``, e.g. from compute-fbank-feats) with a labels file.

    ``labels`` is a Kaldi ``text`` file (``utt word``) or JSONL with ``id`` and ``label`` or
    ``transcript`` (and optional ``speaker``, ``split``).  ``utt2spk`` gives speakers otherwise.
    Global CMVN statistics come from the ``cmvn_split`` utterances (refused without any, unless
    ``allow_no_cmvn``); several splits in one shard set: :func:`shard_kaldi_dirs`.
    """
    feats = FeatsTable(scp, allow_commands)  # a `cmd |` entry is refused unless allowed
    records = _kaldi_records(scp, labels, utt2spk, split)
    cmvn = _kaldi_cmvn(records, lambda r: feats[r["id"]], cmvn_split, allow_no_cmvn)
    return _shard_audio_records(records, lambda r: feats[r["id"]], out_dir, cfg,
                                feature_config={"kaldi_scp": str(Path(scp).resolve())},
                                source_sha256=sha256_file(scp), cmvn=cmvn, show_progress=show_progress)


def _kaldi_records(scp: str | Path, labels: str | Path, utt2spk: str | Path | None, split: str | None) -> list[dict]:
    """One record per utterance of a Kaldi ``feats.scp`` with its label, speaker and split."""
    lab: dict[str, dict] = {}
    if str(labels).endswith(".jsonl"):
        for r in read_jsonl(labels):
            lab[r["id"]] = r
    else:
        for line in Path(labels).read_text().splitlines():
            if line.strip():
                utt, *words = line.split()
                lab[utt] = {"id": utt, "transcript": " ".join(words)}
    spk = {}
    if utt2spk:
        spk = dict(line.split()[:2] for line in Path(utt2spk).read_text().splitlines() if line.strip())
    records = []
    for line in Path(scp).read_text().splitlines():
        if not line.strip():
            continue
        key = line.split()[0]
        r = dict(lab.get(key, {"id": key}))
        r["id"] = key
        r["_scp"] = str(scp)
        r.setdefault("speaker", spk.get(key, key.split("_")[0].split("-")[0]))
        if split:
            r["split"] = split
        records.append(r)
    return records


def _kaldi_cmvn(records: list[dict], load: Callable[[dict], np.ndarray], cmvn_split: str,
                allow_no_cmvn: bool) -> dict | None:
    """Global CMVN statistics over the ``cmvn_split`` records and per-speaker ones over all, as
    the ``fbank`` stage writes them (``cmvn.json``); refused when that split has no frames unless
    ``allow_no_cmvn`` (a model trained on the shards would otherwise see raw features)."""
    from .fbank import _mean_std

    glob = [0, 0.0, 0.0]
    spk: dict[str, list] = {}
    for r in records:
        x = np.asarray(load(r), dtype=np.float64)
        n, s1, s2 = len(x), x.sum(0), (x * x).sum(0)
        if r.get("split") == cmvn_split:
            glob = [glob[0] + n, glob[1] + s1, glob[2] + s2]
        a = spk.setdefault(str(r.get("speaker")), [0, 0.0, 0.0])
        spk[str(r.get("speaker"))] = [a[0] + n, a[1] + s1, a[2] + s2]
    if not glob[0]:
        if allow_no_cmvn:
            return None
        splits = sorted({str(r.get("split")) for r in records})
        raise ValueError(f"no frames in the {cmvn_split!r} split to compute global CMVN from (splits: "
                         f"{', '.join(splits)}); name one with --cmvn-split, or pass --no-cmvn")
    mean, std = _mean_std(*glob)
    return {"global": {"split": cmvn_split, "frames": glob[0], "mean": mean, "std": std},
            "speakers": {k: dict(zip(("mean", "std"), _mean_std(*v)), frames=v[0]) for k, v in sorted(spk.items())}}


def shard_kaldi_dirs(data_dirs: list[tuple[str, str | Path]], out_dir: str | Path, cfg: ShardConfig = ShardConfig(),
                     cmvn_split: str = "train", allow_no_cmvn: bool = False,
                     show_progress: bool = True, allow_commands: bool = False) -> StageSummary:
    """Several Kaldi data dirs (``feats.scp``, ``text``, ``utt2spk``), each with its split name,
    into one shard set, with global CMVN statistics over ``cmvn_split`` (and per speaker) computed
    from the features, as the ``fbank`` stage does; refused when that split has no frames unless
    ``allow_no_cmvn``."""

    records, tables, shas = [], {}, []
    names = [sp for sp, _ in data_dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"a split name is given twice: {names}")
    for sp, d in data_dirs:
        d = Path(d)
        for need in ("feats.scp", "text"):
            if not (d / need).is_file():
                raise ValueError(f"{d}: not a Kaldi data dir with features (no {need})")
        scp = d / "feats.scp"
        tables[str(scp)] = FeatsTable(scp, allow_commands)
        records += _kaldi_records(scp, d / "text", d / "utt2spk" if (d / "utt2spk").is_file() else None, sp)
        shas.append(sha256_file(scp))
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("the same utterance id is in two data dirs")
    cmvn = _kaldi_cmvn(records, lambda r: tables[r["_scp"]][r["id"]], cmvn_split, allow_no_cmvn)
    return _shard_audio_records(records, lambda r: tables[r["_scp"]][r["id"]], out_dir, cfg,
                                feature_config={"kaldi_data_dirs": {sp: str(Path(d).resolve()) for sp, d in data_dirs}},
                                source_sha256=hashlib.sha256(" ".join(shas).encode()).hexdigest(), cmvn=cmvn,
                                show_progress=show_progress)


def _shard_audio_records(records: list[dict], load: Callable[[dict], np.ndarray], out_dir: str | Path,
                         cfg: ShardConfig, feature_config: dict, source_sha256: str, cmvn: dict | None,
                         show_progress: bool, trim: dict | None = None) -> StageSummary:
    timer = Timer()
    out = Path(out_dir)
    kept, rejected, sizes = [], [], []
    itemsize = np.dtype(cfg.dtype).itemsize
    for r in records:
        label = _audio_label(r)
        if label is None or not 0 <= label <= 9:
            rejected.append({"id": r.get("id"), "reason": f"no single-digit label (transcript {r.get('transcript')!r})"})
            continue
        n = r.get("num_frames")
        dim = r.get("feat_dim")
        if n is None or dim is None:  # Kaldi scp input: read the matrix once to size the plan
            m = load(r)
            n, dim = m.shape
        if n == 0:
            rejected.append({"id": r.get("id"), "reason": "zero frames"})
            continue
        kept.append({**r, "label": label, "num_frames": int(n), "feat_dim": int(dim)})
        sizes.append(int(n) * int(dim) * itemsize)
    splits = _by_split(kept)
    plan = {s: [[idx[i] for i in shard] for shard in _plan([kept[i] for i in idx], [sizes[i] for i in idx], cfg)]
            for s, idx in splits.items()}
    attrs_cfg = {"shard": cfg.to_dict(), "features": feature_config}

    def write_one(path: Path, split: str, members: list[int]) -> dict:
        recs = [kept[i] for i in members]
        dim = recs[0]["feat_dim"]
        if any(r["feat_dim"] != dim for r in recs):
            raise ValueError(f"{path.name}: items of different feature dimensions")

        def mats():
            for r in recs:
                m = np.asarray(load(r))
                if m.shape != (r["num_frames"], r["feat_dim"]):
                    raise ValueError(f"{r['id']}: features are {m.shape}, manifest says "
                                     f"({r['num_frames']}, {r['feat_dim']})")
                yield m

        labels = [r["label"] for r in recs]
        frames = sum(r["num_frames"] for r in recs)
        write_audio_shard(path, mats(), frames, dim, [r["id"] for r in recs], labels,
                          [str(r.get("speaker", "")) for r in recs], split, cfg, attrs_cfg, source_sha256)
        return {"num_frames": int(frames), "feat_dim": int(dim), "labels": np.bincount(labels, minlength=10).tolist()}

    from ..perturb import speaker_summary

    extra = {"features": feature_config, "source_sha256": source_sha256, "cmvn": cmvn,
             "speakers": speaker_summary(kept)}
    if trim is not None:  # the VAD config the utterances were trimmed with, for a model's front end
        extra["trim"] = trim
    written, reused = _run(out, "audio", plan, write_one, extra, cfg, show_progress)
    write_jsonl(out / "rejected.jsonl", rejected)
    return StageSummary("shard audio", total=len(records), kept=len(kept), rejected=len(rejected),
                        elapsed_s=timer.elapsed, skipped_done=reused,
                        extra={"shards": written + reused}).check()


def shard_mnist(mnist_dir: str | Path, out_dir: str | Path, cfg: ShardConfig = ShardConfig(),
                splits: Iterable[str] = ("train", "test"), show_progress: bool = True) -> StageSummary:
    """Pack the MNIST IDX files into image shards (keys ``mnist-<split>-<index>``)."""
    from ..mnist import load_mnist

    timer = Timer()
    data = {s: load_mnist(mnist_dir, s) for s in splits}
    source = _digest({s: hashlib.sha256(d.images.tobytes() + d.labels.tobytes()).hexdigest() for s, d in data.items()})
    plan = {}
    for s, d in data.items():
        items = [{}] * len(d.labels)
        plan[s] = _plan(items, [int(np.prod(d.images.shape[1:]))] * len(items), cfg)

    def write_one(path: Path, split: str, members: list[int]) -> dict:
        d = data[split]
        idx = np.asarray(members)
        keys = [f"mnist-{split}-{i:05d}" for i in members]
        write_image_shard(path, d.images[idx], keys, d.labels[idx], split, cfg, {"shard": cfg.to_dict()}, source)
        return {"labels": np.bincount(d.labels[idx], minlength=10).tolist(),
                "image_shape": list(d.images.shape[1:])}

    written, reused = _run(Path(out_dir), "image", plan, write_one, {"source_sha256": source}, cfg, show_progress)
    n = sum(len(d.labels) for d in data.values())
    return StageSummary("shard images", total=n, kept=n, rejected=0, elapsed_s=timer.elapsed,
                        skipped_done=reused, extra={"shards": written + reused}).check()
