"""Noise added on the fly to the training utterances' FBank (pvae_model.noise)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pvae_data.fbank import FbankConfig, compute_fbank
from pvae_model.noise import NoiseConfig, add_noise, bin_centres, noise_bank, renormalise
from pvae_model.normalize import normalize_utterance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
BAND = FbankConfig(low_freq=40, high_freq=3700)  # make demo's band


@pytest.mark.parametrize("field, value", [("prob", 1.5), ("prob", -0.1), ("snr_min", 90.0), ("tilt_max", 4.0),
                                          ("snr_min", float("nan"))])
def test_noise_config_refuses_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=f"noise.{field}"):
        NoiseConfig(**{"prob": 0.5, field: value})
    with pytest.raises(ValueError, match="snr_min/snr_max"):
        NoiseConfig(prob=0.5, snr_min=20, snr_max=10)


def _one(clean: np.ndarray, snr: float, tilt: float, seed: int) -> np.ndarray:
    cfg = NoiseConfig(prob=1.0, snr_min=snr, snr_max=snr, tilt_min=tilt, tilt_max=tilt)
    out, hit = add_noise(torch.from_numpy(clean)[None], torch.tensor([len(clean)]), cfg,
                         torch.Generator().manual_seed(seed), noise_bank(BAND), bin_centres(BAND))
    assert bool(hit[0])
    return out[0].numpy()


@pytest.mark.parametrize("kind, tilt", [("white", 0.0), ("pink", 1.0)])
def test_feature_noise_is_as_close_to_waveform_noise_as_another_draw_of_it(fsdd_audio, kind, tilt):
    """The log-add of the noise's FBank gives the features of the speech with noise added to its
    waveform (voice_conditions.py's noise at 10 dB), as closely as another draw of that noise."""
    import soxr
    from voice_conditions import add_noise as waveform_noise

    ours, other, clean_gap = [], [], []
    for take in range(6):
        x, sr = fsdd_audio(take, "george", take)
        w = soxr.resample(x.astype(np.float64) / 32768, sr, BAND.sample_rate)
        feats = lambda wave: compute_fbank((wave * 32767).astype(np.float32), BAND)  # noqa: E731
        clean = feats(w)
        a, b = (feats(waveform_noise(w, kind, 10, np.random.default_rng(s))) for s in (take, 100 + take))
        gap = lambda p, q: np.abs((p - p.mean(0)) - (q - q.mean(0))).mean()  # noqa: E731
        ours.append(gap(_one(clean, 10, tilt, take), a))
        other.append(gap(b, a))
        clean_gap.append(gap(clean, a))
    assert np.mean(ours) < 1.05 * np.mean(other)
    assert np.mean(ours) < 0.6 * np.mean(clean_gap)


def test_add_noise_follows_the_snr_keeps_padding_and_is_seeded():
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 2, (2, 30, 80)).astype(np.float32) + 10
    lengths = torch.tensor([30, 12])
    bank, centres = noise_bank(BAND), bin_centres(BAND)
    x = torch.from_numpy(clean)
    x[1, 12:] = 0
    loud = NoiseConfig(prob=1.0, snr_min=40, snr_max=40)
    quiet = NoiseConfig(prob=1.0, snr_min=-5, snr_max=-5)
    hi, _ = add_noise(x, lengths, loud, torch.Generator().manual_seed(1), bank, centres)
    lo, _ = add_noise(x, lengths, quiet, torch.Generator().manual_seed(1), bank, centres)
    assert (hi - x).abs().mean() < 0.02 < 0.5 < (lo - x).abs().mean()
    assert torch.all(lo >= x - 1e-5)  # noise only adds power
    assert torch.equal(lo[1, 12:], x[1, 12:])  # padding untouched
    again, _ = add_noise(x, lengths, quiet, torch.Generator().manual_seed(1), bank, centres)
    assert torch.equal(lo, again)
    none, hit = add_noise(x, lengths, NoiseConfig(prob=0.0), torch.Generator().manual_seed(1), bank, centres)
    assert not hit.any() and torch.equal(none, x)
    with pytest.raises(ValueError, match="bins"):
        add_noise(x[:, :, :40], lengths, quiet, torch.Generator(), bank, centres)


def test_renormalise_is_the_clean_utterances_own_cmvn():
    noisy = torch.randn(2, 9, 80) * 3 + 5
    lengths = torch.tensor([9, 4])
    mean, std = torch.full((80,), 5.0), torch.full((80,), 2.0)
    out = renormalise(noisy, lengths, [None, (mean, std)])
    np.testing.assert_allclose(out[0].numpy(), normalize_utterance(noisy[0].numpy()), atol=1e-5)
    np.testing.assert_allclose(out[1, :4].numpy(), ((noisy[1, :4] - 5) / 2).numpy(), atol=1e-6)
    assert torch.all(out[1, 4:] == 0)


def test_paired_epochs_noise_reads_the_raw_features_and_is_seeded(small_shards):
    from pvae_model.data import PairedEpochs, load_audio_split, load_image_split

    images = load_image_split(small_shards[1], "test")
    plain = load_audio_split(small_shards[0], "train", mode="utterance")
    with pytest.raises(ValueError, match="raw FBank"):
        PairedEpochs(plain, images, 16, noise=NoiseConfig(prob=1.0), fbank=FbankConfig())
    audio = load_audio_split(small_shards[0], "train", mode="utterance", keep_raw=True)
    assert all(torch.equal(a, b) for a, b in zip(audio.feats, plain.feats))
    cfg = NoiseConfig(prob=0.5, snr_min=0, snr_max=10)
    b = next(iter(PairedEpochs(audio, images, 16, noise=cfg, fbank=FbankConfig()).batches(0)))
    changed = (b["audio_input"] - b["audio"]).abs().flatten(1).amax(1) > 1e-4
    assert 0 < int(changed.sum()) < len(changed)  # about half the utterances are noisy
    again = next(iter(PairedEpochs(audio, images, 16, noise=cfg, fbank=FbankConfig()).batches(0)))
    assert torch.equal(b["audio_input"], again["audio_input"])  # seeded by (seed, epoch, batch)
    later = next(iter(PairedEpochs(audio, images, 16, noise=cfg, fbank=FbankConfig()).batches(1)))
    assert not torch.equal(later["audio_input"], later["audio"])


def test_train_config_names_noise_as_a_departure(small_shards):
    from pvae_model.config import TrainConfig

    cfg = TrainConfig.from_dict({"noise": {"prob": 0.5}})
    assert cfg.deviations()["noise"]["prob"] == 0.5
    assert "noise" not in TrainConfig().deviations()
    with pytest.raises(ValueError, match="noise.prob"):
        TrainConfig.from_dict({"noise": {"prob": 2}})
    assert json.loads(json.dumps(cfg.to_dict()))["noise"]["snr_max"] == 25.0


def test_cmvn_utterance_prob_normalises_a_share_of_the_encoder_inputs_per_utterance(small_shards):
    """With cmvn: speaker, cmvn_utterance_prob gives the encoders a share of the utterances as one WAV
    of a new voice arrives (its own mean and variance), seeded; the decoders' targets stay as they were."""
    from pvae_model.config import TrainConfig
    from pvae_model.data import PairedEpochs, load_audio_split, load_image_split

    images = load_image_split(small_shards[1], "test")
    audio = load_audio_split(small_shards[0], "train", mode="speaker", min_speaker_frames=1)
    utt = load_audio_split(small_shards[0], "train", mode="utterance")
    b = next(iter(PairedEpochs(audio, images, 16, utterance_cmvn_prob=1.0).batches(0)))
    for i, n in enumerate(b["lengths"].tolist()):  # every input normalised per utterance, as from the raw FBank
        own = [f for f in utt.feats if len(f) == n and torch.allclose(f, b["audio_input"][i, :n], atol=1e-3)]
        assert own, f"input {i} is not any utterance normalised per utterance"
    assert not torch.allclose(b["audio_input"], b["audio"], atol=1e-3)  # targets: speaker-normalised
    half = lambda e: next(iter(PairedEpochs(audio, images, 16, utterance_cmvn_prob=0.5).batches(e)))  # noqa: E731
    changed = (half(0)["audio_input"] - half(0)["audio"]).abs().flatten(1).amax(1) > 1e-4
    assert 0 < int(changed.sum()) < len(changed)
    assert torch.equal(half(0)["audio_input"], half(0)["audio_input"])  # seeded by (seed, epoch, batch)
    assert "audio_input" not in next(iter(PairedEpochs(audio, images, 16).batches(0)))
    cfg = TrainConfig.from_dict({"cmvn": "speaker", "cmvn_utterance_prob": 0.5})
    assert cfg.deviations()["cmvn_utterance_prob"] == 0.5
    with pytest.raises(ValueError, match="cmvn_utterance_prob needs cmvn: speaker"):
        TrainConfig.from_dict({"cmvn": "utterance", "cmvn_utterance_prob": 0.5})
    with pytest.raises(ValueError, match="cmvn_utterance_prob must be in"):
        TrainConfig.from_dict({"cmvn": "speaker", "cmvn_utterance_prob": 1.5})


def test_voice_cmvn_normalises_each_voice_by_its_own_takes():
    """benchmarks/outside_voices._voice_cmvn (what speaker_cmvn_takes.py and a cmvn: speaker run's
    scoring use): each voice's frames, pooled over its takes, have mean 0 and std 1 per bin, and one
    voice's statistics never touch another's."""
    from outside_voices import _voice_cmvn

    rng = np.random.default_rng(0)
    raw = [rng.normal(3.0, 2.0, (20 + i, 4)) for i in range(3)] + [rng.normal(-5.0, 0.5, (30, 4))]
    speakers = np.array(["a", "a", "a", "b"])
    out = _voice_cmvn(raw, speakers)
    a = torch.cat(out[:3]).numpy()
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(out[3].numpy(), normalize_utterance(raw[3]), atol=1e-4)  # one take: per utterance
    assert not np.allclose(out[0].numpy(), normalize_utterance(raw[0]), atol=1e-2)  # three takes: the voice's


def test_recording_conditions_change_what_they_say_and_nothing_else(fsdd_recordings):
    """voice_conditions.py's recording conditions on a real FSDD take: the gain, the clip, the DC
    offset, the noise floor's length and level, the hum's level are what their names say."""
    import soundfile as sf

    from voice_conditions import RECORDING, _speech_power, record

    wave, sr = sf.read(fsdd_recordings / "3_george_1.wav")
    rng = np.random.default_rng(0)
    quiet = record(wave, sr, RECORDING["quiet40"], rng)
    np.testing.assert_allclose(quiet, wave / 100.0)
    loud = record(wave, sr, RECORDING["clipped"], rng)
    assert np.abs(loud).max() == 1.0 and (np.abs(loud) == 1.0).mean() > 0.01
    np.testing.assert_allclose(record(wave, sr, RECORDING["dc"], rng) - wave, 0.1, atol=1e-12)
    for name, under in (("padded", 55.0), ("padded35", 35.0)):
        padded = record(wave, sr, RECORDING[name], rng)
        assert len(padded) == len(wave) + 2 * sr
        floor = padded[: sr // 2]  # noise alone, before the word
        assert abs(10 * np.log10(_speech_power(wave) / (floor ** 2).mean()) - under) < 0.5
        np.testing.assert_allclose(padded[sr:sr + len(wave)], wave, atol=10 ** (-under / 20) * 6 * np.sqrt(_speech_power(wave)))
    hum = record(wave, sr, RECORDING["hum"], rng) - wave
    assert abs(10 * np.log10(_speech_power(wave) / (hum ** 2).mean()) - 20.0) < 0.5


def test_same_audio_names_voices_that_share_wavs(tmp_path):
    """benchmarks/outside_voices.same_audio: a voice whose WAVs are byte for byte an earlier
    voice's is named with how many it shares; a voice that differs in every WAV is not."""
    from outside_voices import same_audio

    rows = []
    for voice, contents in (("v0", [b"a", b"b", b"c"]), ("v1", [b"a", b"x", b"c"]), ("v2", [b"p", b"q", b"r"]),
                            ("v3", [b"p", b"q", b"r"])):
        for k, data in enumerate(contents):
            path = tmp_path / f"{voice}-{k}-0.wav"
            path.write_bytes(data)
            rows.append({"speaker": voice, "id": f"{voice}-{k}-0", "path": str(path)})
    assert same_audio(rows) == {"v1": {"as": "v0", "files": 2}, "v3": {"as": "v2", "files": 3}}
