"""HDF5 shards: format, determinism, resume after SIGKILL, readers (DataLoader workers), tools."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pvae_data.stages.fbank import FbankStageConfig, compute_features, load_features
from pvae_data.io_utils import read_jsonl, write_jsonl
from pvae_data.mnist import IdxError, load_mnist, read_idx
from pvae_data.shards.reader import AudioShards, BucketBatchSampler, ImageShards
from pvae_data.shards.tools import export_kaldi, shard_info, validate_shards
from pvae_data.shards.writer import ShardConfig
from pvae_data.stages.shard import shard_audio, shard_kaldi, shard_mnist

from conftest import validate_kaldi_data_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, fsdd_files) -> Path:
    """Real FBank features of 300 FSDD files (both splits, all speakers and digits)."""
    tmp = tmp_path_factory.mktemp("feats")
    recs = []
    for p in fsdd_files[::10]:
        digit, spk, take = Path(p).stem.split("_")
        recs.append({"id": f"{spk}-{digit}-{int(take):02d}", "audio": p, "speaker": spk,
                     "transcript": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][int(digit)],
                     "split": "test" if int(take) <= 4 else "train"})
    write_jsonl(tmp / "m.jsonl", recs)
    compute_features(tmp / "m.jsonl", tmp / "fbank", FbankStageConfig(chunk_size=100), show_progress=False)
    return tmp / "fbank"


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    d = REPO.parent / "shared" / "data" / "mnist"
    if not d.is_dir():
        pytest.skip("MNIST not found")
    return d


def shas(out: Path) -> list[str]:
    return [e["sha256"] for e in json.loads((out / "index.json").read_text())["shards"]]


def test_audio_shards_hold_exactly_the_features(tmp_path, features_dir):
    s = shard_audio(features_dir, tmp_path / "s", ShardConfig(max_items=64), show_progress=False)
    recs = {r["id"]: r for r in read_jsonl(features_dir / "features.jsonl")}
    assert s.kept == len(recs) == 300 and s.rejected == 0
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert index["schema_version"] == 1 and index["modality"] == "audio"
    assert {e["split"] for e in index["shards"]} == {"train", "test"}
    assert all(e["num_items"] <= 64 for e in index["shards"])
    seen = set()
    for split in ("train", "test"):
        a = AudioShards(tmp_path / "s", split)
        for i in range(len(a)):
            item = a[i]
            r = recs[item.key]
            assert r["split"] == split and item.speaker == r["speaker"]
            assert item.label == int(item.key.split("-")[1])
            assert np.array_equal(item.feats, load_features(features_dir, r))
            seen.add(item.key)
    assert seen == set(recs)
    assert index["cmvn"]["global"]["frames"] > 0  # the model can normalise from the shards alone


def test_plain_h5py_reads_a_shard(tmp_path, features_dir):
    """The format is usable without our code (the docs/shards.md example)."""
    shard_audio(features_dir, tmp_path / "s", show_progress=False)
    index = json.load(open(tmp_path / "s" / "index.json"))
    first = next(e for e in index["shards"] if e["split"] == "train")
    with h5py.File(tmp_path / "s" / first["file"], "r") as f:
        o, n = f["offsets"][3], f["lengths"][3]
        utt = f["feats"][o:o + n]
        key, label = f["keys"].asstr()[3], int(f["labels"][3])
        assert json.loads(f.attrs["config"])["features"]["fbank"]["num_mel_bins"] == 80
    assert np.array_equal(utt, AudioShards(tmp_path / "s", "train")[3].feats) and 0 <= label <= 9 and key


@pytest.mark.parametrize("cfg", [ShardConfig(), ShardConfig(compression="gzip", max_items=50),
                                 ShardConfig(compression="lzf", dtype="float16")])
def test_deterministic_and_options(tmp_path, features_dir, cfg):
    shard_audio(features_dir, tmp_path / "a", cfg, show_progress=False)
    shard_audio(features_dir, tmp_path / "b", cfg, show_progress=False)
    assert shas(tmp_path / "a") == shas(tmp_path / "b")
    a = AudioShards(tmp_path / "a", "train")
    assert a[0].feats.dtype == np.float32  # float16 storage is widened on read
    if cfg.dtype == "float16":
        ref = AudioShards(tmp_path / "a", "train")[0].feats
        assert np.abs(ref - ref.astype(np.float16)).max() == 0
    other = ShardConfig(**{**cfg.to_dict(), "seed": 1})
    shard_audio(features_dir, tmp_path / "c", other, show_progress=False)
    assert list(AudioShards(tmp_path / "c", "train").keys) != list(a.keys)  # the seed matters


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, features_dir):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pvae_data.cli", "shard", "audio", str(features_dir), str(out),
           "--max-items", "3", "--compression", "gzip", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / ".progress").glob("*.json"))) < 5:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / ".progress").glob("*.json")))
    assert 5 <= done < 100 and not (out / "index.json").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "already done, reused" in r.stdout, r.stdout + r.stderr
    shard_audio(features_dir, tmp_path / "clean", ShardConfig(max_items=3, compression="gzip"), show_progress=False)
    assert shas(out) == shas(tmp_path / "clean")
    assert validate_shards(out) == []
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_rerun_rewrites_a_damaged_finished_shard(tmp_path, features_dir):
    out = tmp_path / "s"
    shard_audio(features_dir, out, ShardConfig(max_items=100), show_progress=False)
    victim = out / json.loads((out / "index.json").read_text())["shards"][0]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    s = shard_audio(features_dir, out, ShardConfig(max_items=100), show_progress=False)
    assert s.skipped_done == len(shas(out)) - 1
    assert validate_shards(out) == []


def test_validate_reports_truncation_and_flipped_bytes(tmp_path, features_dir):
    out = tmp_path / "s"
    shard_audio(features_dir, out, ShardConfig(max_items=100), show_progress=False)
    assert validate_shards(out) == []
    files = [out / e["file"] for e in json.loads((out / "index.json").read_text())["shards"]]
    with open(files[0], "r+b") as f:
        f.truncate(files[0].stat().st_size // 2)
    data = bytearray(files[1].read_bytes())
    data[-100] ^= 0x01
    files[1].write_bytes(bytes(data))
    problems = validate_shards(out)
    by_file = {p for p, _ in problems}
    assert str(files[0]) in by_file and str(files[1]) in by_file
    assert any("truncated" in r or "unreadable" in r for p, r in problems if p == str(files[0]))
    assert any("sha256" in r for p, r in problems if p == str(files[1]))
    r = subprocess.run([sys.executable, "-m", "pvae_data.cli", "validate", str(out)],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert r.returncode != 0 and str(files[0]) in r.stderr and "Traceback" not in r.stderr


def test_validate_catches_bad_labels_and_missing_index(tmp_path, features_dir):
    out = tmp_path / "s"
    shard_audio(features_dir, out, show_progress=False)
    e = json.loads((out / "index.json").read_text())["shards"][0]
    with h5py.File(out / e["file"], "r+") as f:
        f["labels"][0] = 12
    assert any("labels out of range" in r for _, r in validate_shards(out))
    (out / "index.json").unlink()
    assert validate_shards(out)[0][1].startswith("missing")


def test_unlabelled_records_are_rejected_not_dropped(tmp_path, features_dir):
    d = tmp_path / "f"
    shutil.copytree(features_dir, d)
    recs = read_jsonl(d / "features.jsonl")
    recs[0]["transcript"] = "one two"
    recs[1]["transcript"] = "hello"
    write_jsonl(d / "features.jsonl", recs)
    s = shard_audio(d, tmp_path / "s", show_progress=False)
    assert (s.total, s.kept, s.rejected) == (300, 298, 2)
    assert len(read_jsonl(tmp_path / "s" / "rejected.jsonl")) == 2


def test_kaldi_round_trip(tmp_path, features_dir):
    from pvae_data.kaldi_io import kaldi_utt_id

    shard_audio(features_dir, tmp_path / "s", show_progress=False)
    n = export_kaldi(tmp_path / "s", tmp_path / "kaldi")  # every split, one data dir each
    assert sorted(p.name for p in (tmp_path / "kaldi").iterdir()) == ["test", "train"]
    for sp in ("train", "test"):
        validate_kaldi_data_dir(tmp_path / "kaldi" / sp)
    assert n == len(AudioShards(tmp_path / "s", "train")) + len(AudioShards(tmp_path / "s", "test"))
    before = (tmp_path / "kaldi" / "train" / "utt2spk").read_bytes()
    export_kaldi(tmp_path / "s", tmp_path / "kaldi", split="test")  # a second export leaves train alone
    assert (tmp_path / "kaldi" / "train" / "utt2spk").read_bytes() == before
    kd = tmp_path / "kaldi" / "test"
    with pytest.raises(ValueError, match="no frames in the 'train' split"):  # no CMVN: refused by default
        shard_kaldi(kd / "feats.scp", kd / "utt2label", tmp_path / "k", utt2spk=kd / "utt2spk", split="test",
                    show_progress=False)
    shard_kaldi(kd / "feats.scp", kd / "utt2label", tmp_path / "k", utt2spk=kd / "utt2spk", split="test",
                show_progress=False, cmvn_split="test")
    a, b = AudioShards(tmp_path / "s", "test"), AudioShards(tmp_path / "k", "test")
    assert len(a) == len(b)
    pos = {kaldi_utt_id(k, s): i for i, (k, s) in enumerate(zip(a.keys, a.speakers))}
    for i in range(len(b)):
        x, y = b[i], a[pos[b.keys[i]]]
        assert np.array_equal(x.feats, y.feats) and (x.label, x.speaker) == (y.label, y.speaker)


def test_mnist_shards_and_idx_validation(tmp_path, mnist_dir):
    s = shard_mnist(mnist_dir, tmp_path / "img", ShardConfig(max_items=25000), show_progress=False)
    assert s.kept == 70000
    train, test = ImageShards(tmp_path / "img", "train"), ImageShards(tmp_path / "img", "test")
    assert (len(train), len(test)) == (60000, 10000)
    ref = load_mnist(mnist_dir, "test")
    pos = {k: i for i, k in enumerate(test.keys)}
    for k in ("mnist-test-00000", "mnist-test-09999"):
        item = test[pos[k]]
        j = int(k.split("-")[-1])
        assert np.array_equal(item.image, ref.images[j]) and item.label == ref.labels[j]
    assert np.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert validate_shards(tmp_path / "img") == []
    # Hand-made IDX files: wrong magic, truncated data, label out of range.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x").write_bytes(struct.pack(">I", 2049) + struct.pack(">I", 3) + bytes([1, 2]))
    with pytest.raises(IdxError, match="bytes of data"):
        read_idx(bad / "x")
    (bad / "y").write_bytes(gzip.compress(struct.pack(">I", 2051) + struct.pack(">III", 1, 2, 2) + bytes(4)))
    with pytest.raises(IdxError, match="expected 2049"):
        read_idx(bad / "y", expect_magic=2049)
    for name, payload in (("t10k-images-idx3-ubyte", struct.pack(">I", 2051) + struct.pack(">III", 1, 28, 28) + bytes(784)),
                          ("t10k-labels-idx1-ubyte", struct.pack(">I", 2049) + struct.pack(">I", 1) + bytes([11]))):
        (bad / name).write_bytes(payload)
    with pytest.raises(IdxError, match="out of range"):
        load_mnist(bad, "test")


def _read_all(dataset, workers: int):
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         multiprocessing_context="spawn" if workers else None)
    return [(item.key, item.feats.sum().item()) for item in loader]


def test_dataloader_workers_read_the_same(tmp_path, features_dir):
    shard_audio(features_dir, tmp_path / "s", ShardConfig(max_items=50), show_progress=False)
    ds = AudioShards(tmp_path / "s", "train")
    ds[0]  # open handles in the parent: workers must not inherit them
    assert _read_all(ds, 2) == _read_all(ds, 0)


def test_bucket_sampler(features_dir, tmp_path):
    shard_audio(features_dir, tmp_path / "s", show_progress=False)
    a = AudioShards(tmp_path / "s", "train")
    s = BucketBatchSampler(a.lengths, batch_size=16, seed=3)
    e0 = s.batches()
    assert sorted(i for b in e0 for i in b) == list(range(len(a)))  # every item once
    s.set_epoch(1)
    assert s.batches() != e0
    s.set_epoch(0)
    assert s.batches() == e0
    plain = BucketBatchSampler(a.lengths, batch_size=16, shuffle=False, pool_batches=1)
    assert s.padding_fraction() < plain.padding_fraction() or plain.padding_fraction() < 0.05
    # DDP: ranks share the epoch's batches without overlap, each the same number of them
    ranks = [BucketBatchSampler(a.lengths, batch_size=4, seed=3, num_replicas=3, rank=r) for r in range(3)]
    parts = [r.batches() for r in ranks]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) >= 1
    flat = [i for p in parts for b in p for i in b]
    assert len(flat) == len(set(flat))
    whole = BucketBatchSampler(a.lengths, batch_size=4, seed=3).batches()
    assert parts[1] == whole[1:len(whole) - len(whole) % 3:3]
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(a.lengths, batch_size=4, num_replicas=2, rank=2)


def test_collate_audio_through_a_dataloader(features_dir, tmp_path):
    """The README's loader: AudioShards + BucketBatchSampler + collate_audio in a DataLoader."""
    import torch
    from torch.utils.data import DataLoader

    from pvae_data.shards.reader import collate_audio

    shard_audio(features_dir, tmp_path / "s", show_progress=False)
    a = AudioShards(tmp_path / "s", "train")
    loader = DataLoader(a, batch_sampler=BucketBatchSampler(a.lengths, batch_size=8, seed=0), collate_fn=collate_audio)
    seen = 0
    for batch in loader:
        B, T, D = batch["feats"].shape
        assert D == 80 and T == int(batch["lengths"].max()) and len(batch["keys"]) == B == len(batch["labels"])
        for j, key in enumerate(batch["keys"]):
            i = a.keys.index(key) if hasattr(a.keys, "index") else list(a.keys).index(key)
            n = int(batch["lengths"][j])
            assert torch.equal(batch["feats"][j, :n], torch.from_numpy(a[i].feats))
            assert not batch["feats"][j, n:].any() and int(batch["labels"][j]) == a[i].label
        seen += B
    assert seen == len(a)


def test_info_counts(tmp_path, features_dir):
    shard_audio(features_dir, tmp_path / "s", ShardConfig(max_items=70), show_progress=False)
    info = shard_info(tmp_path / "s")
    recs = read_jsonl(features_dir / "features.jsonl")
    assert sum(sp["items"] for sp in info["splits"].values()) == len(recs)
    assert info["splits"]["train"]["frames"] == sum(r["num_frames"] for r in recs if r["split"] == "train")
    assert set(info["splits"]["test"]["speakers"]) == {r["speaker"] for r in recs}


@pytest.mark.parametrize("delta", [-1, 1])
def test_readers_check_index_counts_against_the_file(tmp_path, features_dir, delta):
    """An index.json whose num_items was edited by +-1 must not make a reader drop an item or
    hand out one utterance's key with another's features: opening fails and names the file."""
    from pvae_data.shards.reader import ShardError

    shard_audio(features_dir, tmp_path / "s", ShardConfig(max_items=64), show_progress=False)
    index_path = tmp_path / "s" / "index.json"
    index = json.loads(index_path.read_text())
    victim = next(e for e in index["shards"] if e["split"] == "train")
    victim["num_items"] += delta
    index_path.write_text(json.dumps(index))
    with pytest.raises(ShardError, match=victim["file"].replace(".", r"\.") + ".*index.json says"):
        AudioShards(tmp_path / "s", "train")
    AudioShards(tmp_path / "s", "test")  # the other split's shards are untouched and still open


def test_a_shard_with_a_broken_superblock_is_named(tmp_path, mnist_dir):
    from pvae_data.shards.reader import ShardError

    shard_mnist(mnist_dir, tmp_path / "i", ShardConfig(), show_progress=False)
    h5 = sorted((tmp_path / "i").glob("test-*.h5"))[0]
    data = bytearray(h5.read_bytes())
    data[:512] = b"\0" * 512
    h5.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=h5.name):
        ImageShards(tmp_path / "i", "test")


def _write_idx_split(directory: Path, split_stem: str, images: np.ndarray, labels: np.ndarray) -> None:
    n, h, w = images.shape
    (directory / f"{split_stem}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    (directory / f"{split_stem}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def test_wrong_image_shape_is_rejected_by_shard_images_and_validate(tmp_path):
    """14x56 "MNIST" images used to pass `shard images` and `validate` and crash the trainer after
    an epoch: now `shard images` refuses them, and `validate` flags a shard that holds them."""
    import hashlib

    from click.testing import CliRunner

    from pvae_data.cli import main

    rng = np.random.default_rng(0)
    bad = tmp_path / "bad"
    bad.mkdir()
    for stem in ("train", "t10k"):
        _write_idx_split(bad, stem, rng.integers(0, 256, (20, 14, 56)), rng.integers(0, 10, 20))
    r = CliRunner().invoke(main, ["shard", "images", str(bad), str(tmp_path / "s1"), "-q"])
    assert r.exit_code != 0 and "14x56" in r.output and "28x28" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "s1" / "index.json").exists()

    good = tmp_path / "good"
    good.mkdir()
    for stem in ("train", "t10k"):
        _write_idx_split(good, stem, rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20))
    out = tmp_path / "s2"
    assert CliRunner().invoke(main, ["shard", "images", str(good), str(out), "-q"]).exit_code == 0
    assert validate_shards(out) == []
    # Rewrite one shard with 14x56 images and keep index.json consistent (size and sha256), as a
    # tool that reshaped the data would: only the shape check can catch it.
    index = json.loads((out / "index.json").read_text())
    entry = index["shards"][0]
    h5 = out / entry["file"]
    with h5py.File(h5, "r+") as f:
        imgs = f["images"][()]
        del f["images"]
        f.create_dataset("images", data=imgs.reshape(len(imgs), 14, 56))
    entry["bytes"] = h5.stat().st_size
    entry["sha256"] = hashlib.sha256(h5.read_bytes()).hexdigest()
    (out / "index.json").write_text(json.dumps(index))
    problems = validate_shards(out)
    assert any(p == str(h5) and "14x56" in why for p, why in problems), problems


def test_validate_catches_an_edited_label_histogram_and_info_names_a_corrupt_shard(tmp_path, mnist_dir):
    from click.testing import CliRunner

    from pvae_data.cli import main

    out = tmp_path / "i"
    shard_mnist(mnist_dir, out, ShardConfig(), splits=("test",), show_progress=False)
    index = json.loads((out / "index.json").read_text())
    index["shards"][0]["labels"][3] += 1
    (out / "index.json").write_text(json.dumps(index))
    problems = validate_shards(out)
    assert any("label histogram" in why for _, why in problems), problems
    index["shards"][0]["labels"][3] -= 1
    (out / "index.json").write_text(json.dumps(index))
    h5 = out / index["shards"][0]["file"]
    h5.write_bytes(b"\0" * 512 + h5.read_bytes()[512:])
    r = CliRunner().invoke(main, ["info", str(out)])
    assert r.exit_code == 1 and str(h5) in r.output and "Traceback" not in r.output, r.output


def test_a_stage_refuses_an_output_directory_another_process_writes(tmp_path, mnist_dir, fsdd_files):
    """The lock on OUT: exclusive for a plain run, shared among the members of a job array."""
    import fcntl

    from click.testing import CliRunner

    from pvae_data.cli import main

    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".stage.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = CliRunner().invoke(main, ["shard", "images", str(mnist_dir), str(out), "-q"])
        assert r.exit_code == 1 and "being written by another pvae-data process" in r.output, r.output
        assert not (out / "index.json").exists()
    recs = [{"id": f"u{i}", "audio": p, "speaker": "s", "transcript": "zero", "split": "train"}
            for i, p in enumerate(fsdd_files[:8])]
    write_jsonl(tmp_path / "m.jsonl", recs)
    f = tmp_path / "f"
    f.mkdir()
    with open(f / ".stage.lock", "a+") as member:  # as if member 1 of a 2-job array were running
        fcntl.flock(member, fcntl.LOCK_SH | fcntl.LOCK_NB)
        r = CliRunner().invoke(main, ["fbank", str(tmp_path / "m.jsonl"), str(f), "-q", "--chunk-size", "2",
                                      "--num-jobs", "2", "--job-index", "0"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["fbank", str(tmp_path / "m.jsonl"), str(f), "-q", "--chunk-size", "2"])
        assert r.exit_code == 1 and "being written by another" in r.output, r.output
    r = CliRunner().invoke(main, ["fbank", str(tmp_path / "m.jsonl"), str(f), "-q", "--chunk-size", "2"])
    assert r.exit_code == 0, r.output


def test_shard_kaldi_dirs_takes_every_split_and_computes_cmvn(tmp_path, features_dir):
    """Kaldi data dirs of two splits -> one shard set (a second split no longer replaces the first),
    with global CMVN over the train split equal to the fbank stage's."""
    from click.testing import CliRunner

    from pvae_data.cli import main as data_main
    from pvae_data.shards.schema import load_index

    shard_audio(features_dir, tmp_path / "s", show_progress=False)
    export_kaldi(tmp_path / "s", tmp_path / "kaldi")
    r = CliRunner().invoke(data_main, ["shard", "kaldi-dirs", str(tmp_path / "k"), f"train={tmp_path / 'kaldi' / 'train'}",
                                       f"test={tmp_path / 'kaldi' / 'test'}", "-q"])
    assert r.exit_code == 0, r.output
    for sp in ("train", "test"):
        assert len(AudioShards(tmp_path / "k", sp)) == len(AudioShards(tmp_path / "s", sp))
    ours, theirs = load_index(tmp_path / "s")[1]["cmvn"]["global"], load_index(tmp_path / "k")[1]["cmvn"]["global"]
    assert ours["frames"] == theirs["frames"]
    assert np.allclose(ours["mean"], theirs["mean"], atol=1e-4) and np.allclose(ours["std"], theirs["std"], atol=1e-4)
    r = CliRunner().invoke(data_main, ["shard", "kaldi-dirs", str(tmp_path / "k2"), f"test={tmp_path / 'kaldi' / 'test'}"])
    assert r.exit_code == 1 and "no frames in the 'train' split" in r.output and "--no-cmvn" in r.output
