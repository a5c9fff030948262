"""Training: on-the-fly pairing, exact resume, signals, NaN guard, DDP (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pvae_model.data import PairedEpochs, load_audio_split, load_image_split
from pvae_model.config import TrainConfig, load_config
from pvae_model.train import NonFiniteLoss, train

REPO = Path(__file__).resolve().parents[2]
TIMING = {"pairs_per_s", "items_per_s", "minutes"}


@pytest.fixture(scope="module")
def shards(small_shards) -> tuple[Path, Path]:
    """Audio shards of 150 real FSDD digits and image shards of the real MNIST files."""
    return small_shards


def tiny(shards, **kw) -> TrainConfig:
    d = {"audio_shards": str(shards[0]), "image_shards": str(shards[1]), "epochs": 3, "batch_size": 32,
         "eval_every": 0, "eval_coherence": False, "num_threads": 1, "seed": 7,
         "pvae": {"hidden": 24, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8]}}
    d.update(kw)
    return TrainConfig.from_dict(d)


def epochs_of(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pairing_is_on_the_fly_seeded_and_label_preserving(shards):
    audio = load_audio_split(shards[0], "train")
    images = load_image_split(shards[1], "train")
    data = PairedEpochs(audio, images, batch_size=16, seed=3)
    p0, p1 = data.pairing(0), data.pairing(1)
    assert (images.labels[p0] == audio.labels).all() and (images.labels[p1] == audio.labels).all()
    assert (p0 != p1).mean() > 0.9  # a different written digit for (almost) every spoken one
    assert np.array_equal(p0, PairedEpochs(audio, images, 16, seed=3).pairing(0))
    assert not np.array_equal(p0, PairedEpochs(audio, images, 16, seed=4).pairing(0))
    seen = sorted(int(i) for b in data.batches(0) for i in b["label"])
    assert seen == sorted(audio.labels.tolist())


def test_audio_is_cmvn_normalised(shards):
    audio = load_audio_split(shards[0], "train")
    frames = torch.cat(audio.feats)
    assert frames.mean(0).abs().max() < 1e-3 and (frames.std(0) - 1).abs().max() < 1e-2


def test_resume_mid_epoch_equals_uninterrupted(tmp_path, shards):
    cfg = tiny(shards)
    per_epoch = PairedEpochs(load_audio_split(shards[0], "train"), load_image_split(shards[1], "train"),
                             cfg.batch_size, seed=cfg.seed).num_batches()
    train(cfg, tmp_path / "full", show_progress=False)
    # Interrupt inside epoch 2 (two batches into it), then resume to the end.
    train(cfg, tmp_path / "cut", show_progress=False, stop_after_batches=per_epoch + 2)
    ck = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["epoch"], ck["batch"]) == (1, 2)
    train(cfg, tmp_path / "cut", resume=True, show_progress=False)
    assert epochs_of(tmp_path / "cut") == epochs_of(tmp_path / "full")
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_at_epoch_boundary_and_more_epochs(tmp_path, shards):
    train(tiny(shards, epochs=3), tmp_path / "full", show_progress=False)
    train(tiny(shards, epochs=1), tmp_path / "cut", show_progress=False)
    train(tiny(shards, epochs=3), tmp_path / "cut", resume=True, show_progress=False)
    assert epochs_of(tmp_path / "cut") == epochs_of(tmp_path / "full")


def test_outputs_and_guards(tmp_path, shards):
    m = train(tiny(shards, epochs=2, eval_every=1), tmp_path / "r", show_progress=False)
    run = tmp_path / "r"
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "best.pt").exists()
    assert list((run / "tb").glob("events.out.tfevents*"))
    assert 0.1 <= m["purity_zs_speech"] <= 1 and 0.1 <= m["purity_zs_image"] <= 1
    for k in ("nll_audio", "nll_image", "kl_s", "kl_a", "kl_i", "coherence_audio", "coherence_image", "contrastive"):
        assert k in m
    assert load_config(run / "config.yaml") == tiny(shards, epochs=2, eval_every=1)
    # every checkpoint loads under torch's safe default, and the run keeps a time-stamped log
    for name in ("last.pt", "best.pt"):
        ck = torch.load(run / "checkpoints" / name, weights_only=True)
        assert ck["epoch"] >= 1 and isinstance(ck["best_score"], float)
    log = (run / "train.log").read_text().splitlines()
    assert len(log) == 2 and all(line[:4].isdigit() and "epoch" in line for line in log)
    with pytest.raises(FileExistsError):
        train(tiny(shards, epochs=2), run, show_progress=False)
    with pytest.raises(ValueError, match="differs"):
        train(tiny(shards, epochs=2, lr=0.5), run, resume=True, show_progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, shards, monkeypatch):
    from pvae_model.models import pvae as pvae_mod

    cfg = tiny(shards, epochs=3)
    train(tiny(shards, epochs=1), tmp_path / "r", show_progress=False)
    good = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    real = pvae_mod.PVAE.forward
    calls = {"n": 0}

    def poisoned(self, batch, generator=None):
        out = real(self, batch, generator)
        calls["n"] += 1
        if calls["n"] == 2:
            out.metrics["loss"] = float("nan")
        return out

    monkeypatch.setattr(pvae_mod.PVAE, "forward", poisoned)
    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
        train(cfg, tmp_path / "r", resume=True, show_progress=False)
    kept = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert kept["epoch"] == good["epoch"] == 1
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])


def _cli(shards, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pvae_model.cli", "train", "--out", str(run), "--audio-shards", str(shards[0]),
            "--image-shards", str(shards[1]), "--batch-size", "32", "--set", "eval_every=0", "--set", "num_threads=1",
            "--set", "pvae.hidden=24", "--set", "pvae.z_shared=4", "--set", "pvae.image_channels=[4, 8]", "-q", *extra]


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path, shards):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = tmp_path / "r"
    proc = subprocess.Popen(_cli(shards, run, "--epochs", "200"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] >= 1 and "stopped by" in out
    r = subprocess.run(_cli(shards, run, "--epochs", str(ck["epoch"] + 1), "--resume"), env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == ck["epoch"] + 1


def test_ddp_two_cpu_processes(tmp_path, shards):
    """torchrun with 2 processes on gloo: both ranks train, rank 0 writes, the epoch covers the data."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "pvae_model.cli", "train", *_cli(shards, tmp_path / "ddp", "--epochs", "2")[4:]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(np.isfinite(json.loads(x)["loss"]) for x in lines)
    ck = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and isinstance(ck["rng"]["generator"], list) and len(ck["rng"]["generator"]) == 2


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the ranks")
def test_ddp_signal_to_one_rank_stops_all_ranks_cleanly(tmp_path, shards):
    """SIGTERM reaching only rank 1 (as a scheduler's may): every rank stops at the same batch, the
    checkpoint is written and torchrun exits 0 instead of hanging in the next all-reduce."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29518",
           "-m", "pvae_model.cli", "train", *_cli(shards, tmp_path / "ddp", "--epochs", "200")[4:]]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "ddp" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()[1][-3000:]
    rank1 = [c for c in _children(p.pid) if b"LOCAL_RANK=1\0" in Path(f"/proc/{c}/environ").read_bytes()]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    assert "stopped by" in out + err and "checkpoint saved" in out + err
    ck = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert 1 <= ck["epoch"] < 200


def test_purity_command_on_a_trained_run(tmp_path, shards):
    from click.testing import CliRunner

    from pvae_model.cli import main

    train(tiny(shards, epochs=1), tmp_path / "r", show_progress=False)
    r = CliRunner().invoke(main, ["purity", str(tmp_path / "r"), "--seeds", "2", "--checkpoint", "last"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["n_images"] == 10000 and d["n_speech"] == len(load_audio_split(shards[0], "test").labels)
    for k in ("zs_speech", "zs_image", "za_speech", "zi_image"):
        assert 0.1 <= d[k]["mean"] <= 1.0 and d[k]["std"] >= 0


def test_a_run_is_portable(tmp_path, shards, monkeypatch):
    """Shard paths given relative to the cwd of `train` are saved resolved; a run (or its shards)
    moved elsewhere is read with --audio-shards/--image-shards, and the error names config.yaml."""
    import shutil

    from click.testing import CliRunner

    from pvae_model.cli import main
    from pvae_model.eval.metrics import zs_purity

    work = tmp_path / "work"
    shutil.copytree(shards[0], work / "sh" / "audio")
    shutil.copytree(shards[1], work / "sh" / "images")
    monkeypatch.chdir(work)
    train(tiny(("sh/audio", "sh/images"), epochs=1), "run", show_progress=False)
    saved = load_config(work / "run" / "config.yaml")
    assert Path(saved.audio_shards).is_absolute() and Path(saved.audio_shards) == (work / "sh" / "audio").resolve()
    monkeypatch.chdir(tmp_path)
    assert zs_purity(work / "run", "last", seeds=1)["epoch"] == 1  # from another directory
    from pvae_model.models.baselines import UnimodalVAE
    from pvae_model.models.pvae import PVAE

    model = PVAE.from_run(work / "run", "last")
    assert isinstance(model, PVAE) and not model.training
    with pytest.raises(ValueError, match="not a UnimodalVAE"):
        UnimodalVAE.from_run(work / "run", "last")
    shutil.move(str(work / "sh"), str(tmp_path / "moved"))
    r = CliRunner().invoke(main, ["purity", str(work / "run"), "--seeds", "1", "--checkpoint", "last"])
    assert r.exit_code == 1 and "config.yaml" in r.output and "--audio-shards" in r.output
    r = CliRunner().invoke(main, ["purity", str(work / "run"), "--seeds", "1", "--checkpoint",
                                  str(work / "run" / "checkpoints" / "last.pt"),
                                  "--audio-shards", str(tmp_path / "moved" / "audio"),
                                  "--image-shards", str(tmp_path / "moved" / "images")])
    assert r.exit_code == 0, r.output
    # best.pt does not exist (no evaluation epoch): the default falls back to last.pt and says so
    r = CliRunner().invoke(main, ["purity", str(work / "run"), "--seeds", "1",
                                  "--audio-shards", str(tmp_path / "moved" / "audio"),
                                  "--image-shards", str(tmp_path / "moved" / "images")])
    assert r.exit_code == 0 and "no checkpoints/best.pt" in r.stderr and "using last.pt" in r.stderr
    assert json.loads(r.stdout)["epoch"] == 1


@pytest.mark.parametrize("name", ["vae-sp", "vae-im", "jmvae-kl"])
def test_baselines_train_with_the_same_command(tmp_path, shards, name):
    from click.testing import CliRunner

    from pvae_model.cli import main

    m = train(tiny(shards, model=name, epochs=1, eval_every=1), tmp_path / name, show_progress=False)
    assert ("purity_zs_speech" in m) == (name != "vae-im") and ("purity_zs_image" in m) == (name != "vae-sp")
    r = CliRunner().invoke(main, ["purity", str(tmp_path / name), "--seeds", "1"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["model"] == name and "za_speech" not in d and "zi_image" not in d


def test_evaluate_writes_metrics_figures_and_audio(tmp_path, shards):
    import soundfile as sf
    from click.testing import CliRunner

    from pvae_model.cli import main

    from pvae_model.eval.evaluate import EvalConfig, evaluate

    train(tiny(shards, epochs=1), tmp_path / "r", show_progress=False)
    m = evaluate(tmp_path / "r", EvalConfig(checkpoint="last", seeds=2, max_k=12, tsne_images=200, styles=2, wav_refs=1,
                                            coherence_images=100, classifier_images=3000))
    out = tmp_path / "r" / "eval"
    assert set(m["purity"]) == {"zs_speech", "zs_image", "za_speech", "zi_image", "feat_speech", "feat_image"}
    assert all(0.1 <= v["mean"] <= 1 for v in m["purity"].values())
    latents = {"zs_speech", "zs_image", "za_speech", "zi_image"}
    assert set(m["rate"]) == latents and all(v >= 0 for v in m["rate"].values())
    assert set(m["probe"]) == latents and all(0 <= v <= 1 for v in m["probe"].values())
    assert m["objective"] == "paper" and m["deviations"] == {}
    assert set(m["generation"]) == {"speech_own", "speech_zs_only", "speech_style_swapped", "image_own",
                                    "image_zs_only", "image_style_swapped"}
    st = m["style_transfer"]  # Pearson r per style feature, for four ways of generating an image
    assert set(st) == {"image_own", "image_style_swapped", "speech_to_image_ref", "speech_to_image_prior"}
    assert all(set(v) == {"slant", "ink", "width"} and all(-1 <= r <= 1 for r in v.values()) for v in st.values())
    assert len(m["inertia"]["zs_speech"]) == 12 and m["inertia"]["zs_speech"][0] >= m["inertia"]["zs_speech"][-1]
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 1
    c = m["coherence"]
    assert 0 <= c["speech_to_image"] <= 1 and 0 <= c["image_to_speech"] <= 1 and c["n_image_to_speech"] == 100
    for k in ("speech_to_image_prior", "image_to_speech_prior", "speech_to_image_ref", "image_to_speech_ref"):
        assert 0 <= c[k] <= 1, k
    assert c["speech_to_image"] == c["speech_to_image_ref"]
    assert c["classifiers"]["image_test_accuracy"] > 0.85  # even a 3,000-image judge is a real classifier
    # which voices training heard, and every test speaker's own row (issue 26)
    assert m["speakers"]["train"] and m["speakers"]["held_out"] == []
    assert set(m["per_speaker"]) == set(m["speakers"]["test"])
    for row in m["per_speaker"].values():
        assert row["seen_in_training"] and all(0 <= row[k] <= 1 for k in ("purity", "speech_to_image", "speech_own", "judge",
                                                                           "judge_adapted"))
    # the word judge scores the same generations, and its accuracies are recorded
    assert 0 <= c["word_judge"]["image_to_speech_prior"] <= 1
    assert c["classifiers"]["word_judge_seen_accuracy"] > 0.3 and c["classifiers"]["word_judge_held_out_accuracy"] is None
    assert list(m["voices"]["image_to_speech_word_judge"]) == [m["voices"]["default"]]  # generate's voice
    assert set(m["speaker_groups"]) == {"seen"} and m["speaker_groups"]["seen"]["n"] == m["n_speech"]
    s2i, i2s = np.array(m["confusion"]["speech_to_image"]), np.array(m["confusion"]["image_to_speech"])
    assert s2i.shape == i2s.shape == (10, 10) and s2i.sum() == m["n_speech"] and i2s.sum() == 100
    # image -> speech in each training speaker's voice, and the one generate speaks in
    v = m["voices"]
    assert set(v["image_to_speech"]) == set(m["speakers"]["train"]) and v["default"] in v["image_to_speech"]
    assert all(0 <= a <= 1 for a in v["image_to_speech"].values())
    for name in ("inertia.png", "tsne.png", "style_images.png", "style_speech.png",
                 "cross_speech_to_image.png", "cross_image_to_speech.png", "training_curves.png"):
        assert (out / name).stat().st_size > 1000, name
    wav, sr = sf.read(out / "written_to_spoken_digit3_ref0.wav")
    assert sr == 16000 and len(wav) > 1000 and np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    # `pvae-model report` prints the metrics table (ours, then the paper's rows) and the page's path.
    r = CliRunner().invoke(main, ["report", str(tmp_path / "r"), "--out", str(tmp_path / "rep.html")])
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if ln.startswith("| r (pvae, epoch 1)"))
    assert f"{100 * m['purity']['zs_speech']['mean']:.2f} ± " in row
    assert "| paper: PVAE (TIDIGITS-MNIST) | 99.77 | 99.10 |" in r.output
    style_row = [ln for ln in r.output.splitlines() if ln.startswith("| r: image own |")]
    assert len(style_row) == 1 and style_row[0].split(" | ")[1] == f"{st['image_own']['slant']:.2f}"
    assert r.output.rstrip().endswith(f"report: {(tmp_path / 'rep.html').resolve()}")
    page = (tmp_path / "rep.html").read_text()
    assert "adapted word judge" in page and "The word judge (whole-word HMMs)" in page
    # `pvae-model diagnose`: every judged fraction is a fraction; norms and distances are finite.
    r = CliRunner().invoke(main, ["diagnose", str(tmp_path / "r"), "--images", "100"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)  # stderr: "no checkpoints/best.pt ... using last.pt"
    fractions = [v for k, v in d.items() if k.startswith(("speech_", "image_", "mm_"))]
    assert len(fractions) == 13 and all(0 <= v <= 1 for v in fractions)  # + image_to_speech_prior_word
    assert d["n_images"] == 100 and all(np.isfinite(v) for v in d["norms"].values())
    assert set(d["style_transfer"]) == set(st)
    # The training curve judges generations when the judges exist (cached by evaluate above), and a
    # `plus` run names its deviations in metrics.json and the printed table.
    cfg = tiny(shards, epochs=1, eval_every=1, eval_coherence=True, eval_coherence_images=50,
               pvae={**tiny(shards).pvae.to_dict(), "objective": "plus", "departures": {"image_nll_std": 0.31}})
    line = train(cfg, tmp_path / "plus", show_progress=False)
    assert all(0 <= line[f"coh_{k}"] <= 1 for k in ("speech_to_image_prior", "image_to_speech_ref"))
    assert 0 <= line["gen_image_own"] <= 1 and line["cross_nll_audio"] > 0
    mp = evaluate(tmp_path / "plus", EvalConfig(checkpoint="last", seeds=1, max_k=12, tsne_images=200, styles=2,
                                                wav_refs=1, coherence_images=50, classifier_images=3000))
    assert mp["objective"] == "plus" and mp["deviations"] == {"objective": "plus", "cross_weight": 1.0,
                                                              "image_nll_std": 0.31}
    r = CliRunner().invoke(main, ["report", str(tmp_path / "r"), str(tmp_path / "plus"), "--out", str(tmp_path / "2.html")])
    assert r.exit_code == 0, r.output
    assert "| plus [1] |" in r.output and "[1] deviations from the paper's objective (shared/docs/pvae-spec.md): objective = plus" in r.output
    # the tiny test model's sizes are not the paper's: metrics.json and the report say which
    assert mp["size_changes"]["hidden"] == 24 and mp["size_changes"]["z_shared"] == 4
    assert "model sizes that differ from the paper's: plus: " in r.output and "hidden = 24 (paper: 512)" in r.output


def test_a_run_directory_in_use_is_refused(tmp_path, shards):
    import fcntl

    run = tmp_path / "r"
    run.mkdir()
    with open(run / ".train.lock", "a+") as f:  # as if another trainer held the run
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FileExistsError, match="being trained by another process"):
            train(tiny(shards, epochs=1), run, show_progress=False)
    assert not (run / "metrics.jsonl").exists()
    train(tiny(shards, epochs=1), run, show_progress=False)  # released: trains
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_of_a_finished_run_does_nothing(tmp_path, shards):
    train(tiny(shards, epochs=1), tmp_path / "r", show_progress=False)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert train(tiny(shards, epochs=1), tmp_path / "r", resume=True, show_progress=False) == {}
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before


def test_report_renders_in_headless_chromium(tmp_path, shards):
    """The HTML report loads with no console errors; every figure decodes; every WAV has a player."""
    import re
    import shutil

    from pvae_model.eval.evaluate import EvalConfig, evaluate
    from pvae_model.eval.report import build_report

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian chromium not installed (`make test` installs it where apt-get is available)")
    train(tiny(shards, epochs=1), tmp_path / "r", show_progress=False)
    evaluate(tmp_path / "r", EvalConfig(checkpoint="last", seeds=1, max_k=12, tsne_images=200, styles=2,
                                        wav_refs=1, coherence_images=50, classifier_images=2000))
    page = build_report([tmp_path / "r"], tmp_path / "report.html")
    n_png = len(list((tmp_path / "r" / "eval").glob("*.png")))
    n_wav = len(list((tmp_path / "r" / "eval").glob("*.wav")))
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000",
                        "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'data-images-ok="{n_png}/{n_png}"' in r.stdout and n_png >= 6
    assert f'data-audio="{n_wav}"' in r.stdout and n_wav >= 20
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert re.search(r"paper: PVAE \(TIDIGITS-MNIST\)", r.stdout) and "99.77" in r.stdout
    assert re.search(r"Image→speech in the voices training heard .*generate</code> speaks in \w+'s\): \w+ \d", r.stdout)
    # provenance (issue 29): the code's commit, when, where, and the data's hashes, beside the figures
    prov = json.loads((tmp_path / "r" / "eval" / "metrics.json").read_text())["provenance"]
    assert prov["data"]["audio_shards"]["source_sha256"] and prov["host"] and prov["date"]
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown \(.*\)", prov["commit"])
    # each grid's players right under it (issue 29): written->spoken WAVs follow their figure
    text = page.read_text()
    fig = text.index("alt='cross_image_to_speech'")
    assert fig < text.index("written_to_spoken_digit") < text.index("<figure", fig + 1)
    assert "<table class='provenance'>" in page.read_text() and prov["data"]["audio_shards"]["source_sha256"] in r.stdout

    # issue 27: a run from elsewhere whose metrics and file names carry script runs nothing
    from click.testing import CliRunner

    from pvae_model.cli import main

    mpath = tmp_path / "r" / "eval" / "metrics.json"
    m = json.loads(mpath.read_text())
    m["objective"] = "<img src=x onerror=\"document.title='PWNED1'\">"
    m["speakers"] = {"train": ["<script>document.title='PWNED2'</script>"], "perturbed": "<b>x</b>"}
    m["voices"] = {"default": "<script>document.title='PWNED5'</script>",
                   "image_to_speech": {"<img src=y onerror=\"document.title='PWNED6'\">": 0.5}}
    m["provenance"]["command"] = "<script>document.title='PWNED4'</script>"
    mpath.write_text(json.dumps(m))
    png = next((tmp_path / "r" / "eval").glob("*.png"))
    png.rename(png.with_name("x' onerror='document.title=`PWNED3`' y='.png"))
    page = build_report([tmp_path / "r"], tmp_path / "evil.html")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=3000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "<title>PVAE report</title>" in r.stdout, r.stdout[:300]
    assert "PWNED" not in re.sub(r"&lt;.*?&gt;|&quot;|&#x27;", "", r.stdout.split("<body")[0])
    assert "&lt;img src=x onerror" in page.read_text() and "<script>document" not in page.read_text()
    assert f'data-images-ok="{n_png}/{n_png}"' in r.stdout  # the renamed figure still decodes
    # a damaged metrics file: one line naming it, no page
    del m["epoch"]
    mpath.write_text(json.dumps(m))
    out = CliRunner().invoke(main, ["report", str(tmp_path / "r"), "--out", str(tmp_path / "bad.html")])
    assert out.exit_code == 1 and str(mpath) in out.output and "damaged" in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and not (tmp_path / "bad.html").exists()


def test_resume_survives_a_torn_last_metrics_line(tmp_path, shards):
    """A kill (or full disk) while appending to metrics.jsonl leaves a torn last line: resume
    drops it and goes on from the checkpoint; the log then equals an uninterrupted run's."""
    train(tiny(shards, epochs=2), tmp_path / "ref", show_progress=False)
    train(tiny(shards, epochs=1), tmp_path / "r", show_progress=False)
    log = tmp_path / "r" / "metrics.jsonl"
    log.write_text(log.read_text() + '{"loss": 12.5, "epoch": 2, "nll_au')
    train(tiny(shards, epochs=2), tmp_path / "r", resume=True, show_progress=False)
    assert epochs_of(tmp_path / "r") == epochs_of(tmp_path / "ref")


def test_a_damaged_middle_metrics_line_is_named(tmp_path, shards):
    from pvae_model.checkpoints import RunIOError

    train(tiny(shards, epochs=2), tmp_path / "r", show_progress=False)
    log = tmp_path / "r" / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("garbage\n" + "\n".join(lines) + "\n")
    with pytest.raises(RunIOError, match=r"metrics.jsonl: line 1"):
        train(tiny(shards, epochs=3), tmp_path / "r", resume=True, show_progress=False)


def test_checkpoint_write_failure_is_one_line_and_leaves_no_temp(tmp_path, shards, monkeypatch):
    """A full disk while checkpointing (injected: torch.save raises ENOSPC after writing part of
    the file): a one-line error naming the file, no .tmp left, the previous checkpoint intact."""
    import errno

    from click.testing import CliRunner

    from pvae_model.cli import main

    run = tmp_path / "r"
    train(tiny(shards, epochs=1), run, show_progress=False)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    r = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--epochs", "2", "-q"])
    monkeypatch.setattr(torch, "save", real_save)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "last.pt: cannot write the checkpoint" in r.output and "No space left" in r.output
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_corrupt_shard_metadata_is_one_line(tmp_path, shards):
    import shutil

    from click.testing import CliRunner

    from pvae_model.cli import main

    bad = tmp_path / "audio"
    shutil.copytree(shards[0], bad)
    h5 = sorted(bad.glob("train-*.h5"))[0]
    data = bytearray(h5.read_bytes())
    data[0:512] = b"\0" * 512  # the HDF5 superblock
    h5.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "r"), "--audio-shards", str(bad),
                                  "--image-shards", str(shards[1]), "--epochs", "1", "-q"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Error:" in r.output and str(bad) in r.output


def test_config_values_are_type_checked():
    """`--set epochs=abc` or `beta: yes` fail with the field named, not deep inside training."""
    with pytest.raises(ValueError, match=r"TrainConfig\.epochs: expected int, got 'abc'"):
        load_config(None, {"epochs": "abc"})
    with pytest.raises(ValueError, match=r"PVAEConfig\.beta: expected float"):
        load_config(None, {"pvae.beta": True})
    cfg = load_config(None, {"lr": 1, "pvae.image_channels": [8, 16]})  # int for float, list for tuple: fine
    assert cfg.lr == 1 and cfg.pvae.image_channels == (8, 16)


def test_one_merge_rule_flags_over_set_over_config(tmp_path, shards):
    """Issue 28: both CLIs merge the same way (pvae_data.config.merge_config): defaults <
    --config FILE < --set < the command's flags.  ``pvae-model train --epochs 1 --set epochs=9``
    trains one epoch; --set still overrides the file."""
    import yaml
    from click.testing import CliRunner

    from pvae_model.cli import main

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"epochs": 5, "lr": 0.002, "batch_size": 16}))
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"),
            "--audio-shards", str(shards[0]), "--image-shards", str(shards[1]), "-q", "--epochs", "1",
            "--set", "epochs=9", "--set", "lr=0.003", "--set", "eval_every=0", "--set", "num_threads=1",
            "--set", "pvae.hidden=16", "--set", "pvae.z_shared=4", "--set", "pvae.image_channels=[4, 8]"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (saved["epochs"], saved["lr"], saved["batch_size"]) == (1, 0.003, 16)


def test_tensorboard_as_lightning_users_expect(tmp_path, shards):
    """Issue 29: generated images and audio at each evaluation, the HParams tab (the config beside
    the run's metrics), the learning rate, and no scalar written twice at one step."""
    from collections import Counter

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    train(tiny(shards, epochs=2, eval_every=1, batch_size=8), tmp_path / "r", show_progress=False)
    events = sorted((tmp_path / "r" / "tb").rglob("events.out.tfevents*"))
    acc = EventAccumulator(str(tmp_path / "r" / "tb"), size_guidance={"images": 0, "audio": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "speech_to_image" in tags["images"] and len(acc.Images("speech_to_image")) == 2
    assert any(t.startswith("image_to_speech/digit") for t in tags["audio"])
    assert {"lr", "loss", "purity_zs_speech", "step/loss"} <= set(tags["scalars"])
    plugins = {v.metadata.plugin_data.plugin_name for e in EventFileLoader(str(events[0])).Load()
               for v in e.summary.value if e.HasField("summary")}
    assert "hparams" in plugins
    seen = Counter((v.tag, e.step) for f in events for e in EventFileLoader(str(f)).Load()
                   if e.HasField("summary") for v in e.summary.value if v.HasField("simple_value") or
                   v.metadata.plugin_data.plugin_name == "scalars")
    assert seen and max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]


def test_a_second_stage_trains_only_the_named_modules(tmp_path, shards):
    """init_from starts a run from a trained one's weights; train_only freezes every other module:
    their weights leave the stage bit for bit as they came, the named one moves, and resume of
    the second stage is as exact as any run's."""
    from pvae_model.checkpoints import load_checkpoint

    train(tiny(shards, epochs=2), tmp_path / "first", show_progress=False)
    first = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")["model"]
    cfg = tiny(shards, epochs=2, init_from=str(tmp_path / "first"), train_only=["dec_a"])
    train(cfg, tmp_path / "second", show_progress=False)
    second = load_checkpoint(tmp_path / "second" / "checkpoints" / "last.pt")["model"]
    moved = {k.split(".")[0] for k in first if not torch.equal(first[k], second[k])}
    assert moved == {"dec_a"}
    assert "weights from" in (tmp_path / "second" / "train.log").read_text()
    train(cfg, tmp_path / "cut", show_progress=False, stop_after_batches=5)
    train(cfg, tmp_path / "cut", resume=True, show_progress=False)
    assert epochs_of(tmp_path / "cut") == epochs_of(tmp_path / "second")
    assert TrainConfig.from_dict(cfg.to_dict()).deviations()["train_only"] == ["dec_a"]


def test_a_second_stage_refuses_what_it_cannot_use(tmp_path, shards):
    train(tiny(shards, epochs=1), tmp_path / "first", show_progress=False)
    with pytest.raises(ValueError, match=r"train_only: dec_x is not a module of this model \(its modules: .*dec_a"):
        train(tiny(shards, init_from=str(tmp_path / "first"), train_only=["dec_x"]), tmp_path / "a", show_progress=False)
    with pytest.raises(ValueError, match="init_from: .*last.pt is a model of other modules or sizes"):
        train(tiny(shards, init_from=str(tmp_path / "first"), pvae={"hidden": 16, "z_shared": 4, "z_audio": 4,
                                                                    "z_image": 4, "image_channels": [4, 8]}),
              tmp_path / "b", show_progress=False)
    from pvae_model.checkpoints import RunIOError

    with pytest.raises(RunIOError, match="init_from: .*nowhere.*is not a checkpoint"):
        train(tiny(shards, init_from=str(tmp_path / "nowhere")), tmp_path / "c", show_progress=False)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "garbage.pt").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "pickled.pt").write_bytes(b"\x80\x02 anything a pickle could name")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")  # loads safely, but is no checkpoint
    for name, why in (("empty", "unreadable checkpoint"), ("garbage", "unreadable checkpoint"),
                      ("pickled", "refused"), ("tensor", "holds no model weights")):
        with pytest.raises(RunIOError, match=f"{name}.pt.*{why}"):
            train(tiny(shards, init_from=str(tmp_path / f"{name}.pt")), tmp_path / name, show_progress=False)
    with pytest.raises(ValueError, match="train_only must be a list of module names"):
        tiny(shards, train_only=[""])
