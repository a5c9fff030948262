"""``TrainConfig.fbank_floor_db``: each utterance's FBank floored below its loudest value before the
CMVN, in training and wherever the run reads speech (evaluation, the front end, a bundle)."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import DATA_ROOT
from pvae_model.data import normalize_features
from pvae_model.normalize import floor_fbank

WAV = DATA_ROOT / "fsdd" / "recordings" / "7_theo_3.wav"


def test_the_floor_is_librosas_top_db_in_natural_log_units():
    rng = np.random.default_rng(0)
    x = rng.normal(scale=6.0, size=(50, 80)).astype(np.float32)
    x[:5] = np.log(np.finfo(np.float32).eps)  # digital silence, as Kaldi's energy floor leaves it
    for db in (30.0, 50.0):
        oracle = librosa.power_to_db(np.exp(x.astype(np.float64)), ref=1.0, amin=1e-30, top_db=db) * np.log(10) / 10
        np.testing.assert_allclose(floor_fbank(x, db), oracle, atol=1e-4)
        assert floor_fbank(x, db).dtype == np.float32
    assert floor_fbank(x, 0.0) is x


def test_the_floor_keeps_digital_silence_from_squeezing_the_word():
    """A real word with 0.15 s of exact zeros at each edge (Kaldi's energy floor, ~150 dB under the
    word): per-utterance CMVN without the floor spends the variance on the silence and squeezes the
    word's frames to a fifth of their spread; with a 50 dB floor they keep most of it."""
    from pvae_data.fbank import FbankConfig, compute_fbank

    wave, rate = sf.read(WAV, dtype="float32")
    cfg = FbankConfig(sample_rate=rate)
    pad = np.zeros(int(0.15 * rate), np.float32)
    word = compute_fbank(wave * 32768, cfg)
    padded = compute_fbank(np.r_[pad, wave, pad] * 32768, cfg)
    k = (len(padded) - len(word)) // 2
    spread = lambda db: normalize_features(padded, "utterance", None, db)[k:k + len(word)].std()  # noqa: E731
    alone = normalize_features(word, "utterance", None, 50).std()
    assert spread(0) < 0.3 * alone and spread(50) > 0.75 * alone, (spread(0), spread(50), alone)


def test_the_floor_is_refused_without_utterance_cmvn_or_below_zero():
    from pvae_model.config import TrainConfig
    from pvae_model.frontend import InputError, SpeechFrontEnd

    with pytest.raises(ValueError, match="fbank_floor_db .* needs cmvn: utterance"):
        TrainConfig(fbank_floor_db=50)  # cmvn: global: the shards' statistics are of unfloored FBank
    with pytest.raises(ValueError, match="fbank_floor_db must be >= 0"):
        TrainConfig(cmvn="utterance", fbank_floor_db=-1)
    assert TrainConfig(cmvn="utterance", fbank_floor_db=50).deviations()["fbank_floor_db"] == 50
    assert "fbank_floor_db" not in TrainConfig(cmvn="utterance").deviations()
    with pytest.raises(InputError, match="floor_db"):
        SpeechFrontEnd(fbank={}, cmvn_mode="utterance", cmvn=None, vad={}, floor_db=float("nan"))


@pytest.fixture(scope="module")
def floored_run(small_shards, tmp_path_factory):
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    out = tmp_path_factory.mktemp("floor") / "run"
    cfg = TrainConfig.from_dict({
        "audio_shards": str(small_shards[0]), "image_shards": str(small_shards[1]), "epochs": 1, "batch_size": 32,
        "eval_every": 0, "num_threads": 1, "cmvn": "utterance", "fbank_floor_db": 20.0,
        "pvae": {"hidden": 16, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8]}})
    train(cfg, out, show_progress=False)
    return out


def test_a_floored_run_reads_speech_floored_everywhere(floored_run, small_shards, tmp_path):
    """Training, evaluation, the front end and a bundle all read the floor from the run (20 dB, so
    that FSDD's own words change)."""
    import pvae_model
    from pvae_data.shards.reader import AudioShards
    from pvae_model.cli import main
    from pvae_model.run import load_run

    raw = AudioShards(small_shards[0], "test")[0].feats
    assert not np.array_equal(floor_fbank(raw, 20.0), raw)
    _, cfg, _, audio, _, _ = load_run(floored_run)
    assert cfg.fbank_floor_db == 20.0
    np.testing.assert_array_equal(audio.feats[0].numpy(), normalize_features(floor_fbank(raw, 20.0), "utterance", None))

    m = pvae_model.load(floored_run)
    assert m.frontend.floor_db == 20.0
    wave, rate = sf.read(WAV)
    feats = m.frontend.features(wave, rate).numpy()
    np.testing.assert_allclose(feats, normalize_features(floor_fbank(m.frontend.raw_features(wave, rate), 20.0),
                                                         "utterance", None), atol=1e-6)
    r = CliRunner().invoke(main, ["export", str(floored_run), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["speech"]["floor_db"] == 20.0
    b = pvae_model.load(tmp_path / "b")
    assert b.frontend.floor_db == 20.0
    assert np.array_equal(b.speech_to_image(WAV), m.speech_to_image(WAV))
