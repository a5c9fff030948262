"""The `fbank` stage: outputs, resume after SIGKILL, --jobs invariance, bad input, CMVN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from pvae_data.audio import load_audio
from pvae_data.fbank import FbankConfig, compute_fbank
from pvae_data.stages.fbank import FbankStageConfig, StageConfigMismatch, compute_features, load_features
from pvae_data.io_utils import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def fsdd_manifest(paths: list[str], path: Path) -> Path:
    recs = []
    for p in paths:
        digit, spk, take = Path(p).stem.split("_")
        recs.append({"id": f"{spk}-{digit}-{int(take):02d}", "audio": p, "speaker": spk,
                     "split": "test" if int(take) <= 4 else "train"})
    write_jsonl(path, recs)
    return path


def arks_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "arks").glob("*.ark"))}


def test_outputs_are_kaldi_readable_and_equal_direct_computation(tmp_path, fsdd_files):
    m = fsdd_manifest(fsdd_files[::100], tmp_path / "m.jsonl")
    s = compute_features(m, tmp_path / "out", FbankStageConfig(chunk_size=7), show_progress=False)
    assert (s.total, s.kept, s.rejected) == (30, 30, 0)
    recs = read_jsonl(tmp_path / "out" / "features.jsonl")
    scp = dict(kaldiio.load_scp(str(tmp_path / "out" / "feats.scp")))
    assert [r["id"] for r in recs] == [r["id"] for r in read_jsonl(m)] == list(scp)
    for r in recs:
        wave, _ = load_audio(r["audio"], target_rate=16000)
        direct = compute_fbank(wave, FbankConfig())
        assert np.array_equal(scp[r["id"]], direct)
        assert np.array_equal(load_features(tmp_path / "out", r), direct)
        assert r["num_frames"] == len(direct) and r["feat_dim"] == 80
    cfg = json.loads((tmp_path / "out" / "fbank_config.json").read_text())
    assert FbankConfig.from_dict(cfg["config"]["fbank"]) == FbankConfig()


def test_segments_start_end_are_honoured(tmp_path, fsdd_files):
    p = fsdd_files[0]
    write_jsonl(tmp_path / "seg.jsonl", [{"id": "a", "audio": p, "start": 0.1, "end": 0.3, "speaker": "x"}])
    compute_features(tmp_path / "seg.jsonl", tmp_path / "out", show_progress=False)
    feats = kaldiio.load_scp(str(tmp_path / "out" / "feats.scp"))["a"]
    wave, _ = load_audio(p, start=0.1, end=0.3, target_rate=16000)
    assert np.array_equal(feats, compute_fbank(wave)) and len(feats) == 18  # 0.2 s -> 3200 samples


def test_cmvn_stats_match_the_frames(tmp_path, fsdd_files):
    m = fsdd_manifest(fsdd_files[::47], tmp_path / "m.jsonl")
    compute_features(m, tmp_path / "out", FbankStageConfig(chunk_size=13), show_progress=False)
    recs = read_jsonl(tmp_path / "out" / "features.jsonl")
    assert {r["split"] for r in recs} == {"train", "test"}
    cmvn = json.loads((tmp_path / "out" / "cmvn.json").read_text())
    train = np.concatenate([load_features(tmp_path / "out", r) for r in recs if r["split"] == "train"]).astype(np.float64)
    assert cmvn["global"]["frames"] == len(train)
    np.testing.assert_allclose(cmvn["global"]["mean"], train.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cmvn["global"]["std"], train.std(0), rtol=1e-6)
    kaldi_stats = dict(kaldiio.load_scp(str(tmp_path / "out" / "cmvn_speaker.scp")))
    for spk in {r["speaker"] for r in recs}:
        frames = np.concatenate([load_features(tmp_path / "out", r) for r in recs if r["speaker"] == spk])
        st = kaldi_stats[spk]
        assert st.shape == (2, 81) and st[0, -1] == len(frames)
        np.testing.assert_allclose(st[0, :-1] / st[0, -1], frames.mean(0), rtol=1e-6, atol=1e-6)


def test_bad_inputs_are_reported_and_counted(tmp_path, fsdd_files, write_audio):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(os.urandom(1000))
    short = write_audio(tmp_path / "short.wav", np.ones(100, np.int16) * 1000, 8000)
    recs = [{"id": "good", "audio": fsdd_files[0], "speaker": "s"},
            {"id": "corrupt", "audio": str(corrupt), "speaker": "s"},
            {"id": "missing", "audio": str(tmp_path / "nope.wav"), "speaker": "s"},
            {"id": "short", "audio": str(short), "speaker": "s"}]
    write_jsonl(tmp_path / "m.jsonl", recs)
    s = compute_features(tmp_path / "m.jsonl", tmp_path / "out", show_progress=False)
    assert (s.total, s.kept, s.rejected) == (4, 1, 3)
    rej = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert set(rej) == {"corrupt", "missing", "short"}
    assert "too short" in rej["short"] and rej["corrupt"] and rej["missing"]


def test_duplicate_ids_and_config_mismatch_are_errors(tmp_path, fsdd_files):
    write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "audio": fsdd_files[0]}] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        compute_features(tmp_path / "dup.jsonl", tmp_path / "o1", show_progress=False)
    m = fsdd_manifest(fsdd_files[:5], tmp_path / "m.jsonl")
    compute_features(m, tmp_path / "out", show_progress=False)
    other = FbankStageConfig(fbank=FbankConfig(num_mel_bins=40))
    with pytest.raises(StageConfigMismatch):
        compute_features(m, tmp_path / "out", other, show_progress=False)
    s = compute_features(m, tmp_path / "out", other, show_progress=False, overwrite=True)
    assert s.kept == 5 and kaldiio.load_scp(str(tmp_path / "out" / "feats.scp"))["george-0-00"].shape[1] == 40


def test_jobs_do_not_change_the_output(tmp_path, fsdd_files):
    m = fsdd_manifest(fsdd_files[::40], tmp_path / "m.jsonl")
    cfg = FbankStageConfig(chunk_size=10)
    compute_features(m, tmp_path / "j1", cfg, jobs=1, show_progress=False)
    compute_features(m, tmp_path / "j2", cfg, jobs=2, show_progress=False)
    assert arks_bytes(tmp_path / "j1") == arks_bytes(tmp_path / "j2")
    for name in ("features.jsonl", "rejected.jsonl", "cmvn.json"):
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes()


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, fsdd_files):
    """Kill the CLI mid-run with SIGKILL, rerun: finished chunks are reused, the result is identical."""
    m = fsdd_manifest(fsdd_files, tmp_path / "m.jsonl")
    cmd = [sys.executable, "-m", "pvae_data.cli", "fbank", str(m), str(tmp_path / "killed"),
           "--chunk-size", "20", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    arks = tmp_path / "killed" / "arks"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(arks.glob("*.done.json"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(arks.glob("*.done.json")))
    assert 3 <= done_at_kill < 150, "the run must be interrupted part-way for this test to mean anything"
    assert not (tmp_path / "killed" / "features.jsonl").exists()  # nothing that looks finished
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done, reused" in rerun.stdout
    compute_features(m, tmp_path / "clean", FbankStageConfig(chunk_size=20), show_progress=False)
    assert arks_bytes(tmp_path / "killed") == arks_bytes(tmp_path / "clean")
    assert (tmp_path / "killed" / "features.jsonl").read_bytes() == (tmp_path / "clean" / "features.jsonl").read_bytes()
    assert not list(arks.glob("*.tmp")) and not list(arks.glob(".*.tmp"))


def test_a_merge_that_did_not_finish_is_refused_downstream(tmp_path, fsdd_files):
    """Killed (or out of disk) during the final merge: features.jsonl may exist without
    cmvn.json.  No completion marker -> `shard audio` refuses; a rerun completes the merge and
    removes the merge's stale temporaries."""
    from click.testing import CliRunner

    from pvae_data.cli import main
    from pvae_data.stages.fbank import DONE_MARKER
    from pvae_data.io_utils import write_jsonl

    recs = [{"id": f"u{i}", "audio": p, "speaker": "s", "transcript": "zero", "split": "train"}
            for i, p in enumerate(fsdd_files[:12])]
    write_jsonl(tmp_path / "m.jsonl", recs)
    out = tmp_path / "fbank"
    r = CliRunner().invoke(main, ["fbank", str(tmp_path / "m.jsonl"), str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / DONE_MARKER).read_text())["kept"] == 12
    # the state a kill between features.jsonl and cmvn.json leaves, plus the merge's temporaries
    (out / DONE_MARKER).unlink()
    (out / "cmvn.json").unlink()
    for name in (".feats.scp.abc123.tmp", ".features.jsonl.x1.tmp", ".cmvn.json.y2.tmp"):
        (out / name).write_text("partial")
    r = CliRunner().invoke(main, ["shard", "audio", str(out), str(tmp_path / "s"), "-q"])
    assert r.exit_code != 0 and "did not finish" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "s" / "index.json").exists()
    r = CliRunner().invoke(main, ["fbank", str(tmp_path / "m.jsonl"), str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert (out / DONE_MARKER).exists() and (out / "cmvn.json").exists() and not list(out.glob(".*.tmp"))
    r = CliRunner().invoke(main, ["shard", "audio", str(out), str(tmp_path / "s"), "-q"])
    assert r.exit_code == 0, r.output


def test_shard_audio_refuses_features_without_cmvn_unless_told(tmp_path, fsdd_files):
    """All-test manifest: no train frames, so no global CMVN.  `shard audio` refuses (the model
    would train on raw FBank), `--no-cmvn` overrides, and `train` refuses those shards."""
    from click.testing import CliRunner

    from pvae_data.cli import main
    from pvae_data.io_utils import write_jsonl
    from pvae_model.cli import main as model_main

    recs = [{"id": f"u{i}", "audio": p, "speaker": "s", "transcript": "zero", "split": "test"}
            for i, p in enumerate(fsdd_files[:6])]
    write_jsonl(tmp_path / "m.jsonl", recs)
    out = tmp_path / "fbank"
    assert CliRunner().invoke(main, ["fbank", str(tmp_path / "m.jsonl"), str(out), "-q"]).exit_code == 0
    r = CliRunner().invoke(main, ["shard", "audio", str(out), str(tmp_path / "s"), "-q"])
    assert r.exit_code != 0 and "no global CMVN" in r.output and "--no-cmvn" in r.output, r.output
    r = CliRunner().invoke(main, ["shard", "audio", str(out), str(tmp_path / "s"), "-q", "--no-cmvn"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(model_main, ["train", "--out", str(tmp_path / "run"), "--audio-shards", str(tmp_path / "s"),
                                        "--image-shards", str(tmp_path / "nowhere"), "--epochs", "1", "-q"])
    assert r.exit_code == 1 and "no CMVN statistics" in r.output and "Traceback" not in r.output, r.output


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_die_with_a_killed_parent(tmp_path, fsdd_files, sig):
    """`fbank -j 2`, then the parent is killed: its pool workers must not live on as orphans."""
    m = fsdd_manifest(fsdd_files, tmp_path / "m.jsonl")
    cmd = [sys.executable, "-m", "pvae_data.cli", "fbank", str(m), str(tmp_path / "f"), "--chunk-size", "20",
           "-j", "2", "-q"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.02)
    assert len(workers) >= 2, "the pool never started"
    proc.send_signal(sig)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), f"orphaned workers: {[w for w in workers if _alive(w)]}"
