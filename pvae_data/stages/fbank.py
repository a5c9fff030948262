"""The ``fbank`` stage: an utterance or segment manifest -> Kaldi ark/scp features + CMVN stats.

Work is cut into fixed chunks of the manifest (independent of ``--jobs``), each written to
``arks/feats.NNNNN.ark`` under a temporary name and then renamed; a chunk is finished when its
marker ``arks/feats.NNNNN.done.json`` exists (written last, atomically).  A rerun therefore skips
finished chunks and redoes the rest, and the merged outputs are identical whatever the number of
jobs or interruptions.

Cluster job arrays (``job=JobSlice(N, i)``, CLI ``--array-size N --array-index i``): member ``i``
computes only the chunks ``c`` with ``c % N == i`` into the same ``OUT`` (a shared filesystem)
and writes none of the merged outputs below.  A plain run afterwards (no ``--array-index``) finds
every chunk done, reuses them and writes the merged outputs -- byte-identical to one full run;
chunks a failed member left undone are computed by that run.

Outputs in ``OUT``:
  feats.scp            Kaldi script file, keys = ids, absolute ark paths
  features.jsonl       the input records + ``feats`` (ark path relative to OUT, ``:offset``),
                       ``num_frames``, ``feat_dim``
  rejected.jsonl       inputs that produced no features, with the reason
  cmvn.json            global (train split) and per-speaker mean/std (float64)
  cmvn_speaker.ark/scp per-speaker stats in Kaldi's 2 x (D+1) layout (``apply-cmvn`` reads them)
  wav.scp, segments,   with feats.scp and cmvn.scp: OUT is a Kaldi data dir (``LC_ALL=C`` sorted
  reco2dur, text,      tables; the source recordings and each utterance's span in them)
  utt2spk, spk2utt,
  cmvn.scp
  fbank_config.json    the feature config and the stage options, checked on resume
  fbank.done.json      written last, after every file above: its presence says the merged outputs
                       are complete and consistent.  Consumers (``shard audio``) refuse a
                       directory without it; a rerun removes it first and writes it again at the
                       end, so a kill or a full disk during the merge never leaves outputs that
                       look finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import kaldiio
import numpy as np

from ..config import ConfigMixin
from ..fbank import FbankConfig, compute_fbank_batch, num_frames
from ..ids import id_problem
from ..perturb import load_perturbed
from ..io_utils import atomic_open, atomic_path, read_jsonl, remove_stale_temps, write_json, write_jsonl
from ..kaldi_io import append_matrix, cmvn_stats, write_ark_scp, write_data_dir
from ..stage import PLAIN_RUN, JobSlice, StageSummary, Timer, remove_chunk_temps, run_chunks


@dataclass(frozen=True)
class FbankStageConfig(ConfigMixin):
    """Everything that determines the stage's output; saved as ``fbank_config.json``."""

    fbank: FbankConfig = field(default_factory=FbankConfig)
    chunk_size: int = 500  # utterances per ark file / unit of resumable work
    cmvn_split: str = "train"  # split whose frames make the global CMVN stats ("" = all)


class StageConfigMismatch(RuntimeError):
    pass


def _manifest_digest(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True).encode())
    return h.hexdigest()


def _utt_seed(key: str, base: int) -> int:
    return (zlib.crc32(key.encode()) + base) % (2**32)


def _chunk_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    arks = out_dir / "arks"
    return arks / f"feats.{index:05d}.ark", arks / f"feats.{index:05d}.done.json"


def _record_fbank(record: dict, fb: FbankConfig) -> FbankConfig:
    """The stage's FBank config, with the record's ``vtln_warp`` (a ``perturb`` copy) if it has one."""
    from dataclasses import replace

    from ..perturb import record_factors

    _, warp = record_factors(record)
    return fb if warp == 1.0 else replace(fb, vtln_warp=warp)


def _compute_chunk(index: int, records: list[dict], cfg_dict: dict, out_dir: str) -> int:
    """Worker: features of one chunk -> ark (temp name, renamed) -> marker with results and stats."""
    from ..audio import AudioError

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = FbankStageConfig.from_dict(cfg_dict)
    fb = cfg.fbank
    ark_path, done_path = _chunk_paths(Path(out_dir), index)
    waves, ok, rejected, configs = [], [], [], []
    for r in records:
        bad = id_problem(r.get("id")) or (r.get("speaker") is not None and id_problem(r["speaker"], "speaker"))
        if bad:  # an id with whitespace would become a misread feats.scp line
            rejected.append({"id": r.get("id"), "audio": r.get("audio"), "reason": bad})
            continue
        try:
            c = _record_fbank(r, fb)
            w = load_perturbed(r, fb.sample_rate)
        except AudioError as e:
            rejected.append({"id": r["id"], "audio": r.get("audio"), "reason": e.reason})
            continue
        except (ValueError, TypeError) as e:  # a bad speed / vtln_warp field (checked before reading)
            rejected.append({"id": r["id"], "audio": r.get("audio"), "reason": f"bad perturbation: {e}"})
            continue
        except Exception as e:  # any unexpected decoder failure is still reported per file
            rejected.append({"id": r["id"], "audio": r.get("audio"), "reason": f"unreadable: {e}"})
            continue
        if num_frames(len(w), fb) == 0:
            rejected.append({"id": r["id"], "audio": r.get("audio"),
                             "reason": f"too short: {len(w)} samples < one {fb.window_size}-sample window"})
            continue
        waves.append(w)
        configs.append(c)
        ok.append(r)
    seeds = [_utt_seed(r["id"], fb.dither_seed) for r in ok]
    feats: list = [None] * len(ok)
    for c in dict.fromkeys(configs):  # one compiled batch per distinct config, in first-seen order
        idx = [i for i, ci in enumerate(configs) if ci == c]
        for i, m in zip(idx, compute_fbank_batch([waves[i] for i in idx], c, seeds=[seeds[i] for i in idx])):
            feats[i] = m
    results, stats = [], {}
    with atomic_path(ark_path) as tmp:
        with open(tmp, "wb") as f:
            for r, m in zip(ok, feats):
                if not np.isfinite(m).all():
                    rejected.append({"id": r["id"], "audio": r.get("audio"), "reason": "non-finite features"})
                    continue
                offset = append_matrix(f, r["id"], m)
                results.append({"id": r["id"], "offset": offset, "num_frames": int(m.shape[0])})
                m64 = m.astype(np.float64)
                key = f"{r.get('speaker')}\t{r.get('split')}"
                s = stats.setdefault(key, [0, np.zeros(m.shape[1]), np.zeros(m.shape[1])])
                s[0] += m.shape[0]
                s[1] += m64.sum(0)
                s[2] += (m64 * m64).sum(0)
            f.flush()
            os.fsync(f.fileno())
    marker = {
        "chunk": index,
        "ark_bytes": ark_path.stat().st_size,
        "results": results,
        "rejected": rejected,
        "stats": {k: [v[0], v[1].tolist(), v[2].tolist()] for k, v in stats.items()},
    }
    write_json(done_path, marker)
    return len(records)


def _chunk_is_done(out_dir: Path, index: int) -> bool:
    ark, done = _chunk_paths(out_dir, index)
    if not (ark.exists() and done.exists()):
        return False
    try:
        marker = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return marker.get("ark_bytes") == ark.stat().st_size


def compute_features(
    manifest: str | Path,
    out_dir: str | Path,
    cfg: FbankStageConfig = FbankStageConfig(),
    jobs: int = 1,
    show_progress: bool = True,
    overwrite: bool = False,
    job: JobSlice = PLAIN_RUN,
) -> StageSummary:
    """Run the ``fbank`` stage; resumable, deterministic, every input accounted for.

    ``job``: one member of a job array computes its share of the chunks and returns a summary of
    that share only; the merge is a plain run (see the module docstring).
    """
    timer = Timer()
    if overwrite and job.is_member:
        raise ValueError("--overwrite cannot be combined with --array-size > 1 (each member would delete the "
                         "others' chunks); empty OUT before starting the array instead")
    out = Path(out_dir)
    records = read_jsonl(manifest)
    ids = [r.get("id") for r in records]
    if any(not isinstance(i, str) or not i for i in ids):
        raise ValueError(f"{manifest}: every record needs a non-empty string 'id'")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{manifest}: duplicate ids, e.g. {dup}")
    saved = {"config": cfg.to_dict(), "manifest": str(Path(manifest).resolve()),
             "manifest_sha256": _manifest_digest(records)}
    cfg_path = out / "fbank_config.json"
    if cfg_path.exists() and not overwrite:
        old = json.loads(cfg_path.read_text())
        if old.get("config") != saved["config"] or old.get("manifest_sha256") != saved["manifest_sha256"]:
            raise StageConfigMismatch(
                f"{out} holds features made with another config or manifest; "
                "use --overwrite to recompute, or another output directory")
    if overwrite and (out / "arks").exists():
        for p in (out / "arks").iterdir():
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    chunks = [records[i:i + cfg.chunk_size] for i in range(0, len(records), cfg.chunk_size)]
    remove_chunk_temps(out / "arks", job, len(chunks), lambda i: f"feats.{i:05d}")  # ark and marker temps
    if not job.is_member:
        remove_stale_temps(out)  # .feats.scp.*.tmp, .features.jsonl.*.tmp, ... of a killed merge
    from .trim import upstream_vad_config

    write_json(cfg_path, {**saved, "trim": upstream_vad_config(manifest)})  # "trim": provenance, not compared

    # A chunk is done when its ark and marker are complete; the worker writes both itself.
    run = run_chunks(chunks, _compute_chunk, (cfg.to_dict(), str(out)),
                     done=lambda i: True if _chunk_is_done(out, i) else None, finish=lambda i, n: n,
                     job=job, jobs=jobs, desc="fbank", show_progress=show_progress)
    skipped = run.reused
    if job.is_member:
        summary = _member_summary(out, run.owned, sum(len(chunks[i]) for i in run.owned), job)
    else:
        summary = _merge(out, records, len(chunks), cfg)
    summary.elapsed_s = timer.elapsed
    summary.skipped_done = skipped
    return summary.check()


def _member_summary(out: Path, owned: list[int], total: int, job: JobSlice) -> StageSummary:
    """Counts of one array member's chunks, read back from their markers."""
    kept = rejected = 0
    for i in owned:
        marker = json.loads(_chunk_paths(out, i)[1].read_text())
        kept += len(marker["results"])
        rejected += len(marker["rejected"])
    return StageSummary("fbank", total=total, kept=kept, rejected=rejected,
                        extra={"job": job.label(), "chunks": len(owned)})


DONE_MARKER = "fbank.done.json"


def check_complete(features_dir: str | Path) -> dict:
    """The completion marker of a finished ``fbank`` directory, or a clear error."""
    marker = Path(features_dir) / DONE_MARKER
    if not marker.exists():
        raise FileNotFoundError(f"{features_dir}: the fbank stage did not finish (no {DONE_MARKER}); "
                                "rerun `pvae-data fbank` on it to complete the merge")
    return json.loads(marker.read_text())


def _merge(out: Path, records: list[dict], n_chunks: int, cfg: FbankStageConfig) -> StageSummary:
    """Combine chunk markers into the stage outputs, in manifest order; the marker goes last."""
    (out / DONE_MARKER).unlink(missing_ok=True)
    results, rejected, stats = {}, [], {}
    for i in range(n_chunks):
        ark, done = _chunk_paths(out, i)
        marker = json.loads(done.read_text())
        for r in marker["results"]:
            results[r["id"]] = (ark, r)
        rejected.extend(marker["rejected"])
        for k, (n, s, ss) in marker["stats"].items():
            acc = stats.setdefault(k, [0, 0.0, 0.0])
            acc[0] += n
            acc[1] = acc[1] + np.asarray(s)
            acc[2] = acc[2] + np.asarray(ss)
    kept, frames = [], 0
    with atomic_open(out / "feats.scp", "w") as scp:
        for rec in records:
            if rec["id"] not in results:
                continue
            ark, r = results[rec["id"]]
            scp.write(f"{rec['id']} {ark.resolve()}:{r['offset']}\n")
            frames += r["num_frames"]
            kept.append({**rec, "feats": f"{ark.relative_to(out)}:{r['offset']}",
                         "num_frames": r["num_frames"]})
    dim = None
    if kept:
        dim = len(next(iter(stats.values()))[1])
        for k in kept:
            k["feat_dim"] = dim
    write_jsonl(out / "features.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    has_cmvn = _write_cmvn(out, stats, cfg.cmvn_split)
    # OUT is also a Kaldi data dir: wav.scp, segments, text, utt2spk, spk2utt, cmvn.scp beside feats.scp
    write_data_dir(out, kept, out, prefix_ids=False, with_feats=False)
    hours = frames * cfg.fbank.frame_shift_ms / 3.6e6
    write_json(out / DONE_MARKER, {"kept": len(kept), "rejected": len(rejected), "frames": frames,
                                   "global_cmvn": has_cmvn})
    return StageSummary("fbank", total=len(records), kept=len(kept), rejected=len(rejected),
                        extra={"frames": frames, "hours": round(hours, 3)})


def _mean_std(n: int, s: np.ndarray, ss: np.ndarray) -> tuple[list, list]:
    mean = s / n
    var = np.maximum(ss / n - mean * mean, 1e-10)
    return mean.tolist(), np.sqrt(var).tolist()


def _write_cmvn(out: Path, stats: dict, split: str) -> bool:
    """Global stats over ``split`` (all if empty) and per-speaker stats (all splits); True when
    there were frames of ``split`` to make global stats from."""
    if not stats:
        write_json(out / "cmvn.json", {"global": None, "speakers": {}})
        return False
    g = [0, 0.0, 0.0]
    spk: dict[str, list] = {}
    for key, (n, s, ss) in stats.items():
        speaker, sp = key.split("\t")
        if not split or sp == split:
            g = [g[0] + n, g[1] + s, g[2] + ss]
        a = spk.setdefault(speaker, [0, 0.0, 0.0])
        spk[speaker] = [a[0] + n, a[1] + s, a[2] + ss]
    glob = None
    if g[0]:
        mean, std = _mean_std(*g)
        glob = {"split": split or "all", "frames": g[0], "mean": mean, "std": std}
    speakers = {}
    for name in sorted(spk):
        n, s, ss = spk[name]
        mean, std = _mean_std(n, s, ss)
        speakers[name] = {"frames": n, "mean": mean, "std": std}
    write_json(out / "cmvn.json", {"global": glob, "speakers": speakers})
    write_ark_scp(out / "cmvn_speaker.ark", out / "cmvn_speaker.scp",
                  ((name, cmvn_stats(*spk[name])) for name in sorted(spk)))
    return glob is not None


def load_features(features_dir: str | Path, record: dict) -> np.ndarray:
    """Read one utterance's matrix given its ``features.jsonl`` record."""
    path, offset = record["feats"].rsplit(":", 1)
    return kaldiio.load_mat(f"{Path(features_dir) / path}:{offset}")
