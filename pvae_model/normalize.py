"""Feature normalisation of one utterance (Kaldi's ``apply-cmvn`` with per-utterance statistics).

Per-utterance CMVN removes a channel and a speaker's average spectral shape from each
utterance on its own: a new voice needs nothing at test time but the utterance itself.
"""

from __future__ import annotations

import numpy as np

CMVN_MODES = ("global", "utterance", "speaker", "speech")

# cmvn "speech" (an experiment): each utterance's statistics over its speech frames only, those whose
# energy (the log of the summed Mel power) is within SPEECH_DB of its loudest frame; the frames under
# it are normalised by those statistics and clipped at SPEECH_CLIP standard deviations under the mean
# (FSDD's quiet frames reach ~-5; a synthetic voice's digital silence -20 to -60).
SPEECH_DB = 30.0
SPEECH_CLIP = 6.0


def normalize_utterance(feats: np.ndarray, variance: bool = True, floor: float = 1e-3) -> np.ndarray:
    """``feats`` [T, D] minus its own mean over time (and divided by its own std when
    ``variance``; a std under ``floor`` counts as ``floor``), float32."""
    x = np.asarray(feats, dtype=np.float64)
    out = x - x.mean(axis=0, keepdims=True)
    if variance:
        out /= np.maximum(x.std(axis=0, keepdims=True), floor)
    return out.astype(np.float32)


def normalize_speech_frames(feats: np.ndarray, speech_db: float = SPEECH_DB, clip: float = SPEECH_CLIP,
                            floor: float = 1e-3) -> np.ndarray:
    """``feats`` [T, D] (log-Mel, natural log of power) normalised by the mean and std of its speech
    frames (energy within ``speech_db`` dB of the loudest frame), then clipped at ``-clip``: the
    statistics of the word, whatever silence its edges hold (docs/voices.md, "Statistics over the
    speech frames")."""
    x = np.asarray(feats, dtype=np.float64)
    peak = x.max(axis=1, keepdims=True)
    energy = (peak[:, 0] + np.log(np.exp(x - peak).sum(axis=1))) * (10 / np.log(10))
    speech = x[energy >= energy.max() - speech_db]
    out = (x - speech.mean(axis=0, keepdims=True)) / np.maximum(speech.std(axis=0, keepdims=True), floor)
    return np.maximum(out, -clip).astype(np.float32)


def floor_fbank(feats: np.ndarray, floor_db: float) -> np.ndarray:
    """Log-Mel FBank ``[T, D]`` (natural log of power) raised to at least ``floor_db`` dB below the
    utterance's loudest value (0: as is).  Digital silence (a synthetic voice, a gated recording)
    gives frames ~150 dB under the word, where FSDD's recordings have a noise floor ~30-50 dB under
    it; per-utterance CMVN statistics over such frames squeeze the word itself (docs/voices.md,
    "The margins act through the statistics")."""
    if not floor_db:
        return feats
    return np.maximum(feats, feats.max() - np.float32(floor_db / 10 * np.log(10))).astype(np.float32, copy=False)
