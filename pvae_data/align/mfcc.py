"""Aligner features: MFCC (from the Kaldi-exact log-Mel filter banks) + deltas + per-utterance CMN.

Why MFCC and not the 80-bin log-Mel of the ``fbank`` stage: the aligner's emissions are
diagonal Gaussians, which want decorrelated dimensions; 13 cepstra + deltas + delta-deltas is
the classic HMM front end.  Frames are centred (``snip_edges=False``) so that the boundary
before frame ``k`` lies at ``k * shift`` seconds.  Per-utterance cepstral mean normalisation
removes the channel (speaker, microphone), which is what lets a model trained on a few speakers
align others.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..config import ConfigMixin
from ..fbank import FbankConfig, compute_fbank


@dataclass(frozen=True)
class AlignFeatureConfig(ConfigMixin):
    sample_rate: int = 8000  # audio is resampled to this; 8 kHz keeps telephone and FSDD audio alike
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    num_mel_bins: int = 23
    num_ceps: int = 13  # c0 included
    delta_window: int = 2  # Kaldi add-deltas: regression over +-2 frames
    delta_order: int = 2  # 0: statics only, 1: + deltas, 2: + delta-deltas
    cmn: bool = True  # subtract the utterance mean of every dimension
    # > 0: that mean is taken over the frames whose energy is within this many dB of the
    # utterance's loudest (its speech), so that the same words get the same features whether the
    # recording holds seconds of silence or none (cut tight); 0: over every frame.
    cmn_speech_db: float = 0.0
    # Also divide every dimension by its utterance standard deviation (Kaldi's --norm-vars): a
    # speaker's or channel's dynamic range, not only its mean, is then taken out.
    cvn: bool = False

    def __post_init__(self) -> None:
        if self.num_ceps < 1 or self.num_ceps > self.num_mel_bins:
            raise ValueError(f"num_ceps must be in 1..num_mel_bins, got {self.num_ceps}")
        if self.delta_order not in (0, 1, 2):
            raise ValueError(f"delta_order must be 0, 1 or 2, got {self.delta_order}")

    @property
    def dim(self) -> int:
        return self.num_ceps * (1 + self.delta_order)

    @property
    def shift_s(self) -> float:
        return self.frame_shift_ms / 1000.0

    def fbank(self) -> FbankConfig:
        return FbankConfig(sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                           frame_shift_ms=self.frame_shift_ms, frame_length_ms=self.frame_length_ms,
                           snip_edges=False, dither=0.0)


@lru_cache(maxsize=8)
def _dct(num_bins: int, num_ceps: int) -> np.ndarray:
    """Orthonormal DCT-II basis ``[num_bins, num_ceps]`` (Kaldi's ComputeDctMatrix)."""
    n = np.arange(num_bins)
    k = np.arange(num_ceps)
    m = np.cos(np.pi / num_bins * (n[:, None] + 0.5) * k[None, :]) * np.sqrt(2.0 / num_bins)
    m[:, 0] = np.sqrt(1.0 / num_bins)
    return m.astype(np.float32)


def deltas(x: np.ndarray, window: int) -> np.ndarray:
    """Regression deltas over ``+-window`` frames with edge replication (Kaldi / HTK formula)."""
    T = x.shape[0]
    if T == 0:
        return x.copy()
    pad = np.concatenate([np.repeat(x[:1], window, 0), x, np.repeat(x[-1:], window, 0)])
    out = np.zeros_like(x)
    for k in range(1, window + 1):
        out += k * (pad[window + k: window + k + T] - pad[window - k: window - k + T])
    return out / (2.0 * sum(k * k for k in range(1, window + 1)))


def align_features(wave: np.ndarray, cfg: AlignFeatureConfig = AlignFeatureConfig(), vtln_warp: float = 1.0) -> np.ndarray:
    """``[T, dim]`` float32 features of an int16-scale waveform already at ``cfg.sample_rate``.

    ``T = round(len(wave) / shift)`` (centred frames); frame ``t`` is centred on ``(t + 0.5) * shift``.
    ``vtln_warp`` != 1: the Mel filters warped (a VTLP training copy, ``pvae-data perturb --vtlp``).
    """
    fbank_cfg = cfg.fbank() if vtln_warp == 1.0 else replace(cfg.fbank(), vtln_warp=vtln_warp)
    fb = compute_fbank(np.asarray(wave, dtype=np.float32), fbank_cfg)
    c = fb @ _dct(cfg.num_mel_bins, cfg.num_ceps)
    speech = None
    if cfg.cmn and cfg.cmn_speech_db > 0 and len(fb):
        level = fb.mean(axis=1)  # mean natural-log Mel energy per frame
        speech = level >= level.max() - cfg.cmn_speech_db * np.log(10) / 10
    return cepstra_to_features(c, cfg, speech)


def cepstra_to_features(c: np.ndarray, cfg: AlignFeatureConfig, cmn_frames: np.ndarray | None = None) -> np.ndarray:
    """Static cepstra ``[T, num_ceps]`` -> the aligner's features: + deltas, CMN (over ``cmn_frames``
    when given, else every frame), CVN.  Shared by :func:`align_features` and the training copies
    cut from already computed features (``train.without_silence``)."""
    parts = [c]
    if cfg.delta_order >= 1:
        parts.append(deltas(c, cfg.delta_window))
    if cfg.delta_order >= 2:
        parts.append(deltas(parts[1], cfg.delta_window))
    x = np.concatenate(parts, axis=1)
    if cfg.cmn and len(x):
        x = x - x[cmn_frames if cmn_frames is not None else slice(None)].mean(axis=0, keepdims=True)
    if cfg.cvn and len(x) > 1:
        x = x / np.maximum(x.std(axis=0, keepdims=True), 1e-3)
    return np.ascontiguousarray(x, dtype=np.float32)
