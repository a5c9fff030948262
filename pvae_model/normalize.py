"""Feature normalisation of one utterance (Kaldi's ``apply-cmvn`` with per-utterance statistics).

Per-utterance CMVN removes a channel and a speaker's average spectral shape from each
utterance on its own: a new voice needs nothing at test time but the utterance itself.
"""

from __future__ import annotations

import numpy as np

CMVN_MODES = ("global", "utterance", "speaker")


def normalize_utterance(feats: np.ndarray, variance: bool = True, floor: float = 1e-3) -> np.ndarray:
    """``feats`` [T, D] minus its own mean over time (and divided by its own std when
    ``variance``; a std under ``floor`` counts as ``floor``), float32."""
    x = np.asarray(feats, dtype=np.float64)
    out = x - x.mean(axis=0, keepdims=True)
    if variance:
        out /= np.maximum(x.std(axis=0, keepdims=True), floor)
    return out.astype(np.float32)


def floor_fbank(feats: np.ndarray, floor_db: float) -> np.ndarray:
    """Log-Mel FBank ``[T, D]`` (natural log of power) raised to at least ``floor_db`` dB below the
    utterance's loudest value (0: as is).  Digital silence (a synthetic voice, a gated recording)
    gives frames ~150 dB under the word, where FSDD's recordings have a noise floor ~30-50 dB under
    it; per-utterance CMVN statistics over such frames squeeze the word itself (docs/study/voices.md,
    "The speech encoder's read-out: attention over frames")."""
    if not floor_db:
        return feats
    return np.maximum(feats, feats.max() - np.float32(floor_db / 10 * np.log(10))).astype(np.float32, copy=False)
