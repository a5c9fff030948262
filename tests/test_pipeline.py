"""The stage-numbered recipe pipelines/fsdd_mnist.sh, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipelines" / "fsdd_mnist.sh"


TIDIGITS_SCRIPT = REPO / "pipelines" / "tidigits_mnist.sh"


def run(*args: str, env: dict | None = None, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PVAE_BIN": str(Path(sys.executable).parent), **(env or {})}
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def ldc_tidigits(tmp_path_factory, fsdd_recordings) -> Path:
    """The small TIDIGITS-layout corpus of the segmentation tests (SPHERE, <digits><a|b>.wav)."""
    from pvae_data.synth_digits import SynthConfig, build_tidigits

    root = tmp_path_factory.mktemp("ldc")
    build_tidigits(fsdd_recordings, root, SynthConfig(seed=5, max_digits=5), max_per_split=70,
                   speakers=("george", "jackson", "nicolas"))
    return root


def test_tidigits_recipe_data_stages_then_rerun(tmp_path, ldc_tidigits):
    """prepare tidigits -> segment (forced alignment) -> fbank -> shard; a rerun reuses every stage."""
    out = tmp_path / "exp"
    r = run("--tidigits", str(ldc_tidigits), "--out", str(out), "--stop-stage", "3", script=TIDIGITS_SCRIPT)
    assert r.returncode == 0, r.stderr[-3000:]
    for s in ("stage 0: prepare", "stage 1: segment", "stage 2: fbank", "stage 3: shard"):
        assert s in r.stdout
    assert (out / "segment" / "alignments.ctm").stat().st_size > 0
    import json
    index = json.loads((out / "shards" / "audio" / "index.json").read_text())
    n_seg = sum(1 for _ in open(out / "segment" / "segments.jsonl"))
    assert n_seg > 2 * 140 * 0.9  # 2-5 digits an utterance, 140 utterances, few rejected
    assert sum(sh["num_items"] for sh in index["shards"]) == n_seg
    again = run("--tidigits", str(ldc_tidigits), "--out", str(out), "--stop-stage", "3", script=TIDIGITS_SCRIPT)
    assert again.returncode == 0 and "reused" in again.stdout
    assert "(2 already done, reused)" in again.stdout


def test_tidigits_recipe_needs_the_corpus(tmp_path):
    r = run("--out", str(tmp_path), script=TIDIGITS_SCRIPT)
    assert r.returncode != 0 and "--tidigits DIR" in r.stderr


@pytest.fixture(autouse=True)
def _needs_data_and_cli(fsdd_recordings):
    if not (Path(sys.executable).parent / "pvae-data").exists():
        pytest.skip("console scripts not installed in this environment (make install)")


def test_data_stages_then_rerun_reuses_everything(tmp_path):
    r = run("--stop-stage", "3", "--out", str(tmp_path / "exp"))
    assert r.returncode == 0, r.stderr[-2000:]
    for s in ("stage 0: prepare", "stage 1: trim", "stage 2: fbank", "stage 3: shard"):
        assert s in r.stdout
    assert "kept 3000, rejected 0 of 3000" in r.stdout and "stage 4" not in r.stdout
    # george held out by default; the five others' 2,250 training takes get two speed copies each
    assert "test 750, train 2250" in r.stdout and "copies 4500; records 7500" in r.stdout
    index = json.loads((tmp_path / "exp" / "shards" / "audio" / "index.json").read_text())
    assert index["speakers"]["held_out"] == ["george"] and index["speakers"]["perturbed"] == 4500
    assert index["features"]["fbank"]["high_freq"] == 3700.0
    again = run("--stage=2", "--stop_stage", "3", "--out", str(tmp_path / "exp"))  # Kaldi's spellings too
    assert again.returncode == 0 and "stage 0" not in again.stdout
    assert "(7500 already done, reused)" in again.stdout and "(2 already done, reused)" in again.stdout


def test_bad_option_and_unreachable_download_fail_clearly(tmp_path):
    """Missing data is downloaded at stage 0; when that cannot work the recipe stops with the
    download's one-line reason (no traceback) before any later stage."""
    bad = run("--nope", "1")
    assert bad.returncode != 0 and "unknown option --nope" in bad.stderr
    r = run("--data", str(tmp_path / "none"), "--out", str(tmp_path / "x"),
            env={"PVAE_FSDD_URL": "http://127.0.0.1:9/fsdd.tar.gz", "PVAE_DOWNLOAD_BACKOFF": "0"})
    assert r.returncode != 0 and "download fsdd" in r.stdout and "stage 0: prepare" not in r.stdout
    assert "127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_whole_recipe_with_a_tiny_model(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("epochs: 1\nbatch_size: 64\neval_every: 0\nnum_threads: 2\n"
                   "pvae: {hidden: 32, z_shared: 8, z_audio: 8, z_image: 8, image_channels: [8, 16]}\n")
    r = run("--out", str(tmp_path / "exp"), "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "exp" / "report.html").stat().st_size > 100_000
    assert (tmp_path / "exp" / "pvae" / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_whole_tidigits_recipe_with_a_tiny_model(tmp_path, ldc_tidigits):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("epochs: 1\nbatch_size: 64\neval_every: 0\nnum_threads: 2\n"
                   "pvae: {hidden: 32, z_shared: 8, z_audio: 8, z_image: 8, image_channels: [8, 16]}\n")
    r = run("--tidigits", str(ldc_tidigits), "--out", str(tmp_path / "exp"), "--config", str(cfg),
            script=TIDIGITS_SCRIPT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "exp" / "report.html").stat().st_size > 100_000
    assert "| pvae (pvae, epoch 1) |" in r.stdout


def test_loso_recipe_builds_one_fold_per_held_out_speaker(tmp_path):
    """pipelines/loso.sh, data stages only: the fold's held-out voice is in the shards' index and
    only the five others are trained on (with their speed copies); the same copies without the
    noise floor are sharded beside them for the speech decoder's second stage."""
    r = run("--speakers", "theo", "--stop-stage", "4", "--out", str(tmp_path / "loso"),
            script=SCRIPT.parent / "loso.sh")
    assert r.returncode == 0, r.stderr[-2000:] + (tmp_path / "loso" / "theo.log").read_text()[-2000:]
    index = json.loads((tmp_path / "loso" / "theo" / "shards_audio" / "index.json").read_text())
    assert index["speakers"]["held_out"] == ["theo"] and "theo" not in index["speakers"]["train"]
    assert index["speakers"]["perturbed"] == 4500
    fold = tmp_path / "loso" / "theo"
    clean = json.loads((fold / "shards_audio_clean" / "index.json").read_text())
    assert clean["speakers"] == index["speakers"]
    floors = [sum('"edge_pad"' in line for line in (fold / p / "segments.jsonl").open())
              for p in ("perturb", "perturb_clean")]
    assert floors[0] > 3000 and floors[1] == 0
    assert not (tmp_path / "loso" / "loso.md").exists()  # nothing trained, nothing pooled
