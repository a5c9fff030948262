"""Issue 29: a vocoder trained on the corpus (``pvae-model vocoder``), used by evaluate, generate,
serve and the bundle; Griffin-Lim stays the fallback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from conftest import DATA_ROOT
from pvae_model.cli import main

FSDD = DATA_ROOT / "fsdd" / "recordings"
ONE = np.zeros((28, 28), np.float32)
ONE[4:24, 13:16] = 1.0  # a written "1"
TINY = ["--set", "vocoder.channels=16", "--set", "vocoder.layers=1", "--set", "crop_frames=8",
        "--set", "batch_size=4", "--set", "eval_utterances=2", "--set", "eval_every=1", "--set", "num_threads=1"]


@pytest.fixture(scope="module")
def trained(small_shards, tmp_path_factory):
    """A tiny PVAE (one epoch) and a tiny vocoder (two epochs) on the same real FSDD FBank."""
    from pvae_data.io_utils import write_jsonl
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    d = tmp_path_factory.mktemp("voc")
    recs = []
    for i, p in enumerate(sorted(FSDD.glob("*_theo_1*.wav"))[:10] + sorted(FSDD.glob("*_theo_3.wav"))[:2]):
        recs.append({"id": f"u{i:02d}", "audio": str(p), "speaker": "theo", "split": "train" if i < 10 else "test"})
    write_jsonl(d / "segments.jsonl", recs)
    run = d / "run"
    train(TrainConfig.from_dict({
        "audio_shards": str(small_shards[0]), "image_shards": str(small_shards[1]), "epochs": 1, "batch_size": 32,
        "eval_every": 0, "num_threads": 1, "cmvn": "utterance",
        "pvae": {"hidden": 24, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8]}}), run,
        show_progress=False)
    r = CliRunner().invoke(main, ["vocoder", "--segments", str(d / "segments.jsonl"), "--audio-shards",
                                  str(small_shards[0]), "--out", str(d / "voc"), "--epochs", "2", "-q", *TINY])
    assert r.exit_code == 0, r.output
    return {"dir": d, "run": run, "voc": d / "voc", "shards": small_shards}


def test_vocoder_run_trains_resumes_exactly_and_accounts_for_its_data(trained, tmp_path):
    from test_train import epochs_of

    d = trained["dir"]
    log = (trained["voc"] / "train.log").read_text()
    assert "vocoder data: 10 train utterances kept, 0 rejected" in log
    full = epochs_of(trained["voc"])
    assert len(full) == 2 and all(np.isfinite(m["test_mel_l1"]) for m in full)
    args = ["vocoder", "--segments", str(d / "segments.jsonl"), "--audio-shards", str(trained["shards"][0]),
            "--out", str(tmp_path / "cut"), "--epochs", "2", "-q", *TINY]
    from pvae_model.vocoder_train import VocoderTrainConfig, fit

    cfg = VocoderTrainConfig.from_dict(yaml_load(trained["voc"] / "config.yaml"))
    fit(cfg, tmp_path / "cut", show_progress=False, stop_after_batches=3)  # 2.5 batches per epoch: mid-epoch 2
    r = CliRunner().invoke(main, args + ["--resume"])
    assert r.exit_code == 0, r.output
    assert epochs_of(tmp_path / "cut") == full
    # evaluate on a vocoder run: one line, not a traceback
    r = CliRunner().invoke(main, ["evaluate", str(trained["voc"])])
    assert r.exit_code == 1 and "vocoder" in r.output and "Traceback" not in r.output, r.output


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_frames_and_samples_line_up_as_the_pipelines_fbank_cuts_them():
    """Frame t of a crop covers samples [t * hop, t * hop + window): the target starts at the
    centre of the crop's first frame, and synthesis returns as many samples as the frames span."""
    from pvae_data.fbank import FbankConfig
    from pvae_model.vocoder import Vocoder, VocoderConfig
    from pvae_model.vocoder_train import crop_batch

    fb = FbankConfig()
    wave = np.arange(4000, dtype=np.float32)
    feats = np.zeros((23, fb.num_mel_bins), np.float32)
    b = crop_batch([wave], [feats], [0], 8, fb.window_shift, fb.window_size, np.random.default_rng(0))
    t0 = int(b["wave"][0, 0] - fb.window_size // 2) // fb.window_shift
    assert b["fbank"].shape == (1, 8, fb.num_mel_bins) and b["wave"].shape == (1, 7 * fb.window_shift)
    assert float(b["wave"][0, 0]) == t0 * fb.window_shift + fb.window_size // 2
    v = Vocoder(VocoderConfig(channels=8, layers=1), fb.to_dict())
    n_frames = 20
    samples = (n_frames - 1) * fb.window_shift + fb.window_size  # what Kaldi's snip_edges frames span
    assert len(v.synthesize(np.zeros((n_frames, fb.num_mel_bins), np.float32))) == samples
    with pytest.raises(ValueError, match="n_fft"):
        VocoderConfig(n_fft=500)


def test_evaluate_generate_and_a_bundle_speak_with_the_vocoder(trained, tmp_path, forbid_unpickling):
    from pvae_model.checkpoints import RunIOError
    from pvae_model.generate import load

    run, voc = trained["run"], trained["voc"]
    m = load(run, vocoder=voc)
    assert m.vocoder is not None and load(run).vocoder is None
    wave, rate = m.image_to_speech(ONE)
    assert rate == 16000 and wave.dtype == np.float32 and np.isfinite(wave).all() and np.abs(wave).max() <= 0.9 + 1e-6
    # generate --vocoder
    png = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray((ONE * 255).astype(np.uint8)).save(png)
    r = CliRunner().invoke(main, ["generate", str(run), "--image", str(png), "--out", str(tmp_path / "g"),
                                  "--vocoder", str(voc)])
    assert r.exit_code == 0, r.output
    w, sr = sf.read(next((tmp_path / "g").glob("*.wav")))
    assert sr == 16000 and len(w) > 0
    # a bundle holds the vocoder as safetensors, loads it without unpickling, and speaks with it
    r = CliRunner().invoke(main, ["export", str(run), str(tmp_path / "b"), "--vocoder", str(voc)])
    assert r.exit_code == 0, r.output
    b = tmp_path / "b"
    assert (b / "vocoder.safetensors").is_file() and json.loads((b / "config.json").read_text())["vocoder"]["kind"] == "vocos"
    expect, _ = m.image_to_speech(ONE)

    with forbid_unpickling():
        got, _ = load(b).image_to_speech(ONE)
    assert np.allclose(got, expect, atol=1e-5)
    flag = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    torch.save({"x": Payload()}, b / "vocoder.safetensors")
    with pytest.raises(RunIOError, match="vocoder.safetensors: not a safetensors file"):
        load(b)
    assert not flag.exists()
    # a vocoder trained on another FBank is refused by name; a model run is not a vocoder
    cfg = yaml_load(voc / "config.yaml")
    cfg["fbank"]["num_mel_bins"] = 40
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(__import__("yaml").safe_dump(cfg))
    from pvae_model.vocoder import Vocoder, VocoderConfig, check_fbank

    with pytest.raises(ValueError, match="num_mel_bins 40 vs 80"):
        check_fbank(Vocoder(VocoderConfig(channels=8, layers=1), cfg["fbank"]), m.frontend.fbank, "v")
    r = CliRunner().invoke(main, ["generate", str(run), "--image", str(png), "--out", str(tmp_path / "g2"),
                                  "--vocoder", str(run)])
    assert r.exit_code == 1 and "not a vocoder run" in r.output, r.output


def test_evaluate_writes_its_wavs_with_the_vocoder(trained, tmp_path):
    """evaluate's WAV writer (its grids of generated speech) speaks with ``EvalConfig.vocoder``."""
    from pvae_model.eval.evaluate import EvalConfig, _generation
    from pvae_model.run import load_run

    _, cfg, model, audio, images, cmvn = load_run(trained["run"], "last")
    for name, voc in (("gl", ""), ("voc", str(trained["voc"]))):
        (tmp_path / name).mkdir()
        _generation(model, audio, images, cmvn, cfg, EvalConfig(styles=1, wav_refs=1, vocoder=voc), tmp_path / name)
    wavs = sorted((tmp_path / "voc").glob("written_to_spoken_*.wav"))
    assert len(wavs) == 10 and all(np.isfinite(sf.read(w)[0]).all() for w in wavs)
    a, b = sf.read(wavs[0])[0], sf.read(tmp_path / "gl" / wavs[0].name)[0]
    assert len(a) != len(b) or not np.allclose(a, b)  # not Griffin-Lim's
