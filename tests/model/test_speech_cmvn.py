"""``TrainConfig.cmvn: speech``: each utterance normalised by the statistics of its speech frames
(within ``SPEECH_DB`` of its loudest frame), quieter frames clipped at ``-SPEECH_CLIP``."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import DATA_ROOT
from pvae_model.data import normalize_features
from pvae_model.normalize import SPEECH_CLIP, normalize_speech_frames, normalize_utterance

WAV = DATA_ROOT / "fsdd" / "recordings" / "7_theo_3.wav"


def test_a_word_keeps_its_own_statistics_whatever_silence_surrounds_it():
    """A real word with 0.15 s of exact zeros at each edge (Kaldi's energy floor, ~150 dB under the
    word): its frames read as they do alone, where per-utterance CMVN squeezes them."""
    from pvae_data.fbank import FbankConfig, compute_fbank

    wave, rate = sf.read(WAV, dtype="float32")
    cfg = FbankConfig(sample_rate=rate)
    pad = np.zeros(int(0.15 * rate), np.float32)
    word = compute_fbank(wave * 32768, cfg)
    padded = compute_fbank(np.r_[pad, wave, pad] * 32768, cfg)
    k = (len(padded) - len(word)) // 2
    alone = normalize_features(word, "speech", None)
    inside = normalize_features(padded, "speech", None)
    core = slice(3, len(word) - 3)  # frames whose window holds none of the added zeros
    assert np.abs(inside[k:k + len(word)][core] - alone[core]).mean() < 0.1
    squeezed = normalize_features(padded, "utterance", None)[k:k + len(word)]
    assert np.abs(squeezed[core] - normalize_utterance(word)[core]).mean() > 0.5  # what it mends
    assert inside.min() == pytest.approx(-SPEECH_CLIP) and inside.dtype == np.float32
    assert inside[:k - 3].max() == pytest.approx(-SPEECH_CLIP)  # the silence itself: clipped


def test_an_utterance_that_is_all_speech_is_normalised_as_per_utterance_cmvn():
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.3, size=(40, 80)).astype(np.float32)  # every frame within 30 dB
    np.testing.assert_allclose(normalize_speech_frames(x), normalize_utterance(x), atol=1e-5)


def test_noise_is_refused_with_speech_cmvn():
    from pvae_model.config import TrainConfig

    with pytest.raises(ValueError, match="noise needs cmvn"):
        TrainConfig(cmvn="speech", noise={"prob": 0.5})
    assert TrainConfig(cmvn="speech").deviations()["cmvn"] == "speech"
