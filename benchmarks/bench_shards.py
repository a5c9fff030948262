"""Shard stage: write throughput, random-read rate, peak memory, bucketing padding; one run.

    python benchmarks/bench_shards.py [--data ../shared/data] [--replicate 10] [--reads 50000]

Setup (untimed): the real stages build FSDD features once in a temp dir (``prepare_corpus`` ->
``compute_features``, 3,000 utterances, 80-dim fbank at 16 kHz); a second features dir lists
every FSDD utterance ``--replicate`` times under different ids (``<id>-rK``), all pointing at
the same ark data (its ``arks/`` is a symlink), so ``shard_audio`` sees a corpus R x FSDD.
Everything lives in one temp dir on one filesystem and is removed at the end.

1. Write throughput, MB/s = feature payload (sum of frames x 80 x 4 bytes) / seconds.
   ``shard_audio`` with the default ShardConfig (float32, no compression, 256 MiB shards, seeded
   shuffle) on the R x FSDD features dir, timed end to end: reading the ark matrices with
   kaldiio, planning, concatenating, writing HDF5, sha256 of every shard, the ``.progress`` side
   files and ``index.json``.  What ``np.save`` writes: the *same per-shard arrays* the shards
   hold (feats [frames, 80] float32, offsets int64, lengths int32, labels int16; not the key
   and speaker strings), one ``.npy`` per array and shard, same shard membership and order
   (read back from the shards before timing), in the same temp dir.  Rows, same bytes each:
     shard_audio          the stage, from the features dir
     np.save pipeline     from the same features dir: kaldiio reads + concatenate + np.save
     write_audio_shard    the HDF5 writer alone, per-utterance matrices already in memory
     np.save, matrices    concatenate + np.save from the same in-memory matrices
     np.save alone        np.save of the ready arrays (the floor: a memcpy into the page cache)
   Ratios pair rows with the same input (stage / pipeline is the like-for-like figure for the
   issue's target >= 0.5; stage / np.save alone is the strictest reading).  Two modes:
   ``no fsync`` (neither side fsyncs its payload; ``os.sync()`` before each timing, untimed) and
   ``fsync`` (every .h5 / .npy file fsynced inside the timing).  Best of ``--repeat``, rows
   interleaved.  A breakdown times the stage's main parts alone.
2. Random reads.  FSDD-size shards (1 x FSDD, default config, and the same with gzip), read
   through ``AudioShards`` in this process with ``--reads`` uniform random indices over all
   3,000 utterances, after 1,000 warm-up reads; files are in the page cache (just written).
   ``getitem`` is ``ds[i]`` alone (the uncompressed path returns a view of the memory map);
   ``+ copy`` also does ``np.array(item.feats)``, so every byte is touched.  Target >= 20,000/s.
   The gzip figure is with a warm chunk cache: the 64 MB cache holds a whole decompressed
   FSDD-size shard, so most reads after the first pass over a chunk decompress nothing.
3. Peak memory.  ``python -m pvae_data.cli shard audio FEATURES OUT -q --max-mb M`` in a fresh
   subprocess, started by a small launcher process that reports the child's own ru_maxrss
   from ``os.wait4`` (Linux keeps a process's peak RSS across fork + exec, so forking straight
   from this large process would report at least our own RSS).  Baseline: the same for a
   process that only imports numpy, h5py, kaldiio, pvae_data.cli / pvae_data.stages.shard.  Runs:
   the R x FSDD corpus at two ``--max-mb`` values and the 1 x FSDD corpus at the smaller one;
   a fit of the increment over baseline, ``a + b x largest shard``, separates the part that
   follows the shard size (b) from the part that follows the number of utterances (a).
4. Padding: ``BucketBatchSampler(lengths, 128).padding_fraction()`` on the FSDD train split
   (target < 10 %), next to the same sampler with ``pool_batches=1`` (= random batches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6  # throughput in decimal MB/s; shard sizes (--max-mb) are MiB, as the CLI means them


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--replicate", type=int, default=10, help="corpus = this many x FSDD for writes / memory")
    ap.add_argument("--reads", type=int, default=50_000, help="random single-utterance reads per shard set")
    ap.add_argument("--repeat", type=int, default=5, help="best of N write timings")
    ap.add_argument("--max-mb", type=float, nargs=2, default=[16.0, 64.0], help="shard sizes for the memory runs")
    ap.add_argument("--jobs", type=int, default=2, help="processes for prepare/fbank (setup only)")
    ap.add_argument("--tmp", default=None, help="parent of the temp dir (default: the system's)")
    args = ap.parse_args()

    fsdd = Path(args.data) / "fsdd"
    if not (fsdd / "recordings").is_dir():
        raise SystemExit(f"no FSDD under {fsdd}")
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start (other processes make the timings noisier)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_shards_", dir=args.tmp))
    try:
        feat1, featR, n_utt = _build(fsdd, tmp, args.replicate, args.jobs)
        print(f"setup: FSDD features {n_utt} utterances, x{args.replicate} replicated manifest "
              f"({time.perf_counter() - t_start:.1f} s, untimed)")
        _bench_write(featR, tmp, args.replicate, args.repeat)
        shards1 = _bench_reads(feat1, tmp, args.reads)
        _bench_memory(feat1, featR, tmp, args.replicate, args.max_mb)
        _bench_padding(shards1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.perf_counter() - t_start:.1f} s")


# --------------------------------------------------------------------------------------------


def _build(fsdd: Path, tmp: Path, replicate: int, jobs: int) -> tuple[Path, Path, int]:
    """Real prepare + fbank on FSDD, then a features dir listing each utterance R times."""
    from pvae_data.stages.fbank import FbankStageConfig, compute_features
    from pvae_data.io_utils import read_jsonl, write_jsonl
    from pvae_data.stages.prepare import PrepareConfig, prepare_corpus

    prepare_corpus(PrepareConfig(corpus="fsdd", source=str(fsdd)), tmp / "prep", jobs=jobs, progress=False)
    feat1 = tmp / "feat1"
    compute_features(tmp / "prep" / "utterances.jsonl", feat1, FbankStageConfig(), jobs=jobs, show_progress=False)
    records = read_jsonl(feat1 / "features.jsonl")
    featR = tmp / f"feat{replicate}"
    featR.mkdir()
    (featR / "arks").symlink_to(feat1 / "arks", target_is_directory=True)
    for name in ("fbank_config.json", "cmvn.json", "fbank.done.json"):
        shutil.copy(feat1 / name, featR / name)
    write_jsonl(featR / "features.jsonl", ({**r, "id": f"{r['id']}-r{k}"} for k in range(replicate) for r in records))
    return feat1, featR, len(records)


def _payload_bytes(features_dir: Path) -> int:
    from pvae_data.io_utils import read_jsonl

    return sum(r["num_frames"] * r["feat_dim"] * 4 for r in read_jsonl(features_dir / "features.jsonl"))


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# 1. write throughput


def _bench_write(featR: Path, tmp: Path, replicate: int, repeat: int) -> None:
    import h5py
    import kaldiio

    from pvae_data.io_utils import read_jsonl
    from pvae_data.io_utils import sha256_file
    from pvae_data.shards.writer import ShardConfig, write_audio_shard
    from pvae_data.stages.shard import shard_audio

    payload = _payload_bytes(featR)
    out, npy, h5 = tmp / "write_stage", tmp / "write_npy", tmp / "write_h5"
    feats_of = {r["id"]: str(featR / r["feats"]) for r in read_jsonl(featR / "features.jsonl")}

    def fresh(d: Path) -> None:  # untimed: empty output dir, dirty pages of earlier runs on disk
        shutil.rmtree(d, ignore_errors=True)
        os.sync()

    def fsync_dir(d: Path) -> None:
        for p in sorted(d.glob("*.h5")):
            _fsync_path(p)

    # one untimed warm-up (imports, ark pages in cache), then read back what the shards hold
    fresh(out)
    shard_audio(featR, out, ShardConfig(), show_progress=False)
    shards = []
    for p in sorted(out.glob("*.h5")):
        with h5py.File(p, "r") as f:
            a = {k: f[k][()] for k in ("feats", "offsets", "lengths", "labels")}
            keys, speakers = list(f["keys"].asstr()[()]), list(f["speakers"].asstr()[()])
            shards.append({"stem": p.stem, "split": str(f.attrs["split"]), "arrays": a, "keys": keys,
                           "speakers": speakers, "mats": np.split(a["feats"], a["offsets"][1:])})
    assert sum(s["arrays"]["feats"].nbytes for s in shards) == payload

    def save(stem: str, arrays: dict, fsync: bool) -> None:
        for k, v in arrays.items():
            with open(npy / f"{stem}.{k}.npy", "wb") as f:
                np.save(f, v)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())

    def run_stage(fsync: bool) -> None:  # the shard stage, features dir -> shards
        shard_audio(featR, out, ShardConfig(), show_progress=False)
        if fsync:
            fsync_dir(out)

    def run_npy_pipeline(fsync: bool) -> None:  # features dir -> .npy: same reads, same grouping
        npy.mkdir()
        for s in shards:
            mats = [kaldiio.load_mat(feats_of[k]) for k in s["keys"]]
            lengths = np.array([len(m) for m in mats], dtype=np.int32)
            offsets = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype(np.int64)
            save(s["stem"], {"feats": np.concatenate(mats), "offsets": offsets, "lengths": lengths,
                             "labels": s["arrays"]["labels"]}, fsync)

    def run_h5_writer(fsync: bool) -> None:  # the HDF5 writer alone, matrices already in memory
        h5.mkdir()
        for s in shards:
            write_audio_shard(h5 / f"{s['stem']}.h5", iter(s["mats"]), sum(len(m) for m in s["mats"]),
                              s["mats"][0].shape[1], s["keys"], s["arrays"]["labels"].tolist(),
                              s["speakers"], s["split"], ShardConfig(), {}, "")
        if fsync:
            fsync_dir(h5)

    def run_npy_mats(fsync: bool) -> None:  # same input as the writer: per-utterance matrices
        npy.mkdir()
        for s in shards:
            a = s["arrays"]
            save(s["stem"], {"feats": np.concatenate(s["mats"]), "offsets": a["offsets"], "lengths": a["lengths"],
                             "labels": a["labels"]}, fsync)

    def run_npy_ready(fsync: bool) -> None:  # np.save alone, the arrays ready in memory
        npy.mkdir()
        for s in shards:
            save(s["stem"], s["arrays"], fsync)

    rows = [("shard_audio (stage: read arks, plan, write HDF5, sha256, index)", run_stage, out),
            ("np.save pipeline (kaldiio reads + concatenate + np.save)", run_npy_pipeline, npy),
            ("write_audio_shard (HDF5 writer, matrices in memory)", run_h5_writer, h5),
            ("np.save, matrices in memory (concatenate + np.save)", run_npy_mats, npy),
            ("np.save alone (arrays ready in memory)", run_npy_ready, npy)]
    t: dict = {}
    for _ in range(repeat):  # interleaved, so a burst of load elsewhere hits every row alike
        for fsync in (False, True):
            for name, fn, d in rows:
                fresh(d)
                t[name, fsync] = min(t.get((name, fsync), float("inf")), _time(lambda: fn(fsync)))
    npy_bytes = sum(v.nbytes for s in shards for v in s["arrays"].values())
    print(f"\n1. write throughput, {replicate} x FSDD = {payload / MB:.0f} MB of float32 features "
          f"({len(feats_of)} utterances) in {len(shards)} shards (default config: 256 MiB, no compression); "
          f"MB/s = feature MB / s, best of {repeat}; .npy files: feats, offsets, lengths, labels per shard "
          f"({npy_bytes / MB:.0f} MB); all in one temp dir")
    print(f"  {'':66s} {'no fsync':>18s} {'fsync':>18s}")
    for name, _, _ in rows:
        print(f"  {name:66s}" + "".join(f" {payload / MB / t[name, f]:6.0f} MB/s {t[name, f]:5.2f} s"
                                         for f in (False, True)))
    for a, b, what in ((0, 1, "shard_audio / np.save pipeline (same input: the features dir)"),
                       (2, 3, "write_audio_shard / np.save (same input: matrices in memory)"),
                       (0, 4, "shard_audio / np.save alone (strictest)")):
        ta = [t[rows[a][0], f] for f in (False, True)]
        tb = [t[rows[b][0], f] for f in (False, True)]
        print(f"  ratio {what:60s}" + "".join(f" {y / x:18.2f}" for x, y in zip(ta, tb)) + "   (target >= 0.5)")

    # where shard_audio's time goes (each part timed on its own, page cache warm)
    t_read = min(_time(lambda: [kaldiio.load_mat(p) for p in feats_of.values()]) for _ in range(repeat))
    t_sha = min(_time(lambda: [sha256_file(p) for p in out.glob("*.h5")]) for _ in range(repeat))
    t_cat = min(_time(lambda: [np.concatenate(s["mats"]) for s in shards]) for _ in range(repeat))
    print(f"  parts of shard_audio, each timed alone (best of {repeat}): kaldiio reads of {len(feats_of)} matrices {t_read:.2f} s, "
          f"concatenate {t_cat:.2f} s, sha256 of the shards {t_sha:.2f} s")
    for d in (out, npy, h5):
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# 2. random reads


def _bench_reads(feat1: Path, tmp: Path, reads: int) -> Path:
    from pvae_data.shards.reader import AudioShards
    from pvae_data.shards.writer import ShardConfig
    from pvae_data.stages.shard import shard_audio

    print(f"\n2. random single-utterance reads through AudioShards, 1 process, FSDD-size shards, "
          f"{reads} uniform random indices (page cache warm)")
    first = None
    for comp in ("none", "gzip"):
        d = tmp / f"fsdd_{comp}"
        shard_audio(feat1, d, ShardConfig(compression=comp), show_progress=False)
        first = first or d
        ds = AudioShards(d)
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(ds), reads).tolist()
        for i in rng.integers(0, len(ds), 1000).tolist():  # warm-up: open handles, fill chunk cache
            ds[i]

        def get() -> None:
            for i in idx:
                ds[i]

        def get_copy() -> None:
            for i in idx:
                np.array(ds[i].feats)

        t_get, t_copy = _time(get), _time(get_copy)
        size = sum(p.stat().st_size for p in d.glob("*.h5"))
        path = "memory-mapped" if comp == "none" else "h5py, 64 MB chunk cache"
        print(f"  {comp:4s} ({path}; {len(ds.shards)} shards, {size / MB:.1f} MB on disk): "
              f"getitem {reads / t_get:9,.0f} reads/s   + copy {reads / t_copy:9,.0f} reads/s  (target >= 20,000/s)")
    return first


# --------------------------------------------------------------------------------------------
# 3. peak memory


_BASELINE = "import numpy, h5py, kaldiio, pvae_data, pvae_data.cli, pvae_data.stages.shard"


# Linux carries a process's peak RSS across fork + exec, so a child forked from this (large)
# process would report at least our own RSS.  A small launcher forks the measured command and
# prints that child's own peak (KiB) from os.wait4.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "code = os.waitstatus_to_exitcode(status)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(code)\n"
)


def _peak_rss(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes of the process running ``cmd``, alone; wall seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return int(r.stdout.split()[-1]) * 1024, time.perf_counter() - t  # Linux: ru_maxrss in KiB


def _bench_memory(feat1: Path, featR: Path, tmp: Path, replicate: int, max_mbs: list[float]) -> None:
    base, _ = _peak_rss([sys.executable, "-c", _BASELINE])
    print("\n3. peak RSS of `python -m pvae_data.cli shard audio FEATURES OUT -q --max-mb M` "
          "(fresh subprocess, os.wait4)")
    print(f"  baseline (a process that only imports numpy, h5py, kaldiio, pvae_data.cli/.shards): "
          f"{base / 2**20:.0f} MiB")
    runs = [(featR, replicate, max_mbs[0]), (featR, replicate, max_mbs[1]), (feat1, 1, max_mbs[0])]
    fit = []
    for feats, rep, mb in runs:
        out = tmp / f"mem_{rep}_{mb:g}"
        peak, wall = _peak_rss([sys.executable, "-m", "pvae_data.cli", "shard", "audio", str(feats), str(out),
                                "-q", "--max-mb", f"{mb:g}"])
        index = json.loads((out / "index.json").read_text())
        largest = max(e["num_frames"] * e["feat_dim"] * 4 for e in index["shards"])
        corpus = _payload_bytes(feats)
        inc = peak - base
        print(f"  corpus {rep:2d} x FSDD = {corpus / 2**20:5.0f} MiB, --max-mb {mb:g}: "
              f"{len(index['shards']):2d} shards, largest {largest / 2**20:5.1f} MiB -> peak RSS "
              f"{peak / 2**20:5.0f} MiB, +{inc / 2**20:4.0f} MiB over baseline = "
              f"{inc / largest:.1f} x largest shard, {inc / corpus:.2f} x corpus ({wall:.1f} s)")
        fit.append((inc, largest, corpus, sum(e["num_items"] for e in index["shards"])))
        shutil.rmtree(out)
    # increment = a(items) + b * largest shard: b from the two shard sizes on the same corpus,
    # a for each corpus size from the runs at the same shard size
    (i1, s1, c1, n1), (i2, s2, _, _), (i3, s3, c3, n3) = fit
    b = (i2 - i1) / (s2 - s1)
    a_big, a_small = i1 - b * s1, i3 - b * s3
    per_item = (a_big - a_small) / (n1 - n3)
    print(f"  fit of these runs: increment = a + b x largest shard, b = {b:.1f}; a = {a_big / 2**20:.0f} MiB "
          f"for {n1} utterances, {a_small / 2**20:.0f} MiB for {n3} ({per_item / 1e3:.1f} kB per utterance = "
          f"{per_item * n1 / c1:.2f} x the feature bytes of an average utterance)")


# --------------------------------------------------------------------------------------------
# 4. padding


def _bench_padding(shards: Path) -> None:
    from pvae_data.shards.reader import AudioShards, BucketBatchSampler

    lengths = AudioShards(shards, split="train").lengths
    print(f"\n4. padding with batch size 128 on the FSDD train split ({len(lengths)} utterances, "
          f"{lengths.min()}-{lengths.max()} frames, mean {lengths.mean():.0f})")
    for pool, what in ((50, "BucketBatchSampler (default pool_batches=50)"), (1, "pool_batches=1 (random batches)")):
        fr = []
        for epoch in range(5):
            s = BucketBatchSampler(lengths, 128, seed=0, pool_batches=pool)
            s.set_epoch(epoch)
            fr.append(s.padding_fraction())
        print(f"  {what:46s}: {100 * fr[0]:5.1f} % padded frames at epoch 0 "
              f"(epochs 0-4: {100 * min(fr):.1f}-{100 * max(fr):.1f} %)" + ("  (target < 10 %)" if pool == 50 else ""))


if __name__ == "__main__":
    main()
