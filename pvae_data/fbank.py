"""Kaldi-exact log-Mel filter banks, vectorised over frames *and* utterances.

This is a pure-function port of Kaldi's ``compute-fbank-feats`` (``src/feat/feature-window.cc``,
``feature-fbank.cc``, ``mel-computations.cc``).  ``kaldi-native-fbank`` is the test oracle
(``tests/test_fbank.py``); we keep our own implementation because batching many utterances
into one framing pass, one rFFT and one Mel matmul is several times faster than calling a
per-frame C++ extractor from Python (``benchmarks/bench_fbank.py``).

Input samples are on the **int16 scale** (``[-32768, 32767]``), as in Kaldi: the log floor and
energy thresholds only mean what Kaldi means on that scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Sequence

import numpy as np

FLT_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class FbankConfig:
    """Options of Kaldi's ``compute-fbank-feats``; defaults are Kaldi's except those noted."""

    sample_rate: int = 16000  # audio at any other rate is resampled to this first
    num_mel_bins: int = 80  # Kaldi: 23
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0  # Kaldi: 1.0; 0 keeps features deterministic
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"  # povey | hanning | hamming | rectangular | sine
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means offset from Nyquist (Kaldi convention)
    use_power: bool = True
    use_log_fbank: bool = True
    dither_seed: int = 0  # only used when dither > 0

    def __post_init__(self) -> None:
        nyquist = 0.5 * self.sample_rate
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if self.window_type not in _WINDOWS:
            raise ValueError(f"window_type must be one of {sorted(_WINDOWS)}, got {self.window_type!r}")
        if not (0 <= self.low_freq < high <= nyquist):
            raise ValueError(
                f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); "
                f"got low_freq={self.low_freq}, high_freq={high}"
            )
        if self.num_mel_bins < 3:
            raise ValueError("num_mel_bins must be >= 3")
        if self.window_size < 2 or self.window_shift < 1:
            raise ValueError("frame length/shift too short for the sample rate")

    # Kaldi computes sizes with int() truncation of samp_freq * ms / 1000.
    @property
    def window_size(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def padded_window_size(self) -> int:
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FbankConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FbankConfig fields: {sorted(unknown)}")
        return cls(**d)


def _povey(n: int) -> np.ndarray:
    a = 2 * math.pi / (n - 1)
    return (0.5 - 0.5 * np.cos(a * np.arange(n))) ** 0.85


def _hanning(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * math.pi / (n - 1) * np.arange(n))


def _hamming(n: int) -> np.ndarray:
    return 0.54 - 0.46 * np.cos(2 * math.pi / (n - 1) * np.arange(n))


def _sine(n: int) -> np.ndarray:
    return np.sin(math.pi / (n - 1) * np.arange(n))


_WINDOWS = {
    "povey": _povey,
    "hanning": _hanning,
    "hamming": _hamming,
    "sine": _sine,
    "rectangular": np.ones,
}


def mel_scale(freq: np.ndarray | float) -> np.ndarray | float:
    """Kaldi's Mel scale (natural log, 1127 factor)."""
    return 1127.0 * np.log(1.0 + np.asarray(freq) / 700.0)


@lru_cache(maxsize=16)
def mel_banks(cfg: FbankConfig) -> np.ndarray:
    """Triangular Mel filters as a dense ``[padded/2 + 1, num_bins]`` float32 matrix.

    The Nyquist row is zero, exactly as in Kaldi (its bins cover ``0 .. padded/2 - 1``).
    """
    n_fft = cfg.padded_window_size
    num_fft_bins = n_fft // 2
    nyquist = 0.5 * cfg.sample_rate
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_low, mel_high = mel_scale(cfg.low_freq), mel_scale(high)
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    b = np.arange(cfg.num_mel_bins)[None, :]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(cfg.sample_rate / n_fft * np.arange(num_fft_bins))[:, None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    w = np.where(mel <= center, up, down)
    w = np.where((mel > left) & (mel < right), w, 0.0)
    out = np.zeros((num_fft_bins + 1, cfg.num_mel_bins), dtype=np.float32)
    out[:num_fft_bins] = w
    out.setflags(write=False)
    return out


@lru_cache(maxsize=16)
def _window(cfg: FbankConfig) -> np.ndarray:
    w = _WINDOWS[cfg.window_type](cfg.window_size).astype(np.float32)
    w.setflags(write=False)
    return w


def num_frames(num_samples: int, cfg: FbankConfig) -> int:
    """Number of frames Kaldi produces for ``num_samples`` samples (``NumFrames``, flush=true)."""
    size, shift = cfg.window_size, cfg.window_shift
    if cfg.snip_edges:
        return 0 if num_samples < size else 1 + (num_samples - size) // shift
    return (num_samples + shift // 2) // shift


def frame_signal(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """``[num_frames, window_size]`` frames, Kaldi-style (reflection at the edges if not snipping)."""
    size, shift = cfg.window_size, cfg.window_shift
    n = num_frames(len(wave), cfg)
    if n == 0:
        return np.zeros((0, size), dtype=wave.dtype)
    if cfg.snip_edges:
        return np.lib.stride_tricks.sliding_window_view(wave, size)[::shift][:n]
    # Frame t is centred on t*shift + shift/2; samples outside [0, N) are mirrored as in Kaldi.
    first = shift // 2 - size // 2
    idx = first + shift * np.arange(n)[:, None] + np.arange(size)[None, :]
    N = len(wave)
    while True:
        neg, big = idx < 0, idx >= N
        if not (neg.any() or big.any()):
            break
        idx = np.where(neg, -idx - 1, idx)
        idx = np.where(idx >= N, 2 * N - 1 - idx, idx)
    return wave[idx]


def _process_frames(frames: np.ndarray, cfg: FbankConfig, rng: np.random.Generator | None) -> np.ndarray:
    """Dither, DC removal, pre-emphasis and windowing of ``[F, window_size]`` float32 frames."""
    x = np.array(frames, dtype=np.float32, copy=True)
    if cfg.dither != 0.0:
        assert rng is not None
        x += cfg.dither * rng.standard_normal(x.shape, dtype=np.float32)
    if cfg.remove_dc_offset:
        x -= x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    if cfg.preemph_coeff != 0.0:
        # Kaldi: x[i] -= c*x[i-1] for i = N-1..1, then x[0] -= c*x[0].
        x[:, 1:] -= cfg.preemph_coeff * x[:, :-1]
        x[:, 0] *= 1.0 - cfg.preemph_coeff
    x *= _window(cfg)
    return x


def _spectrum_to_fbank(frames: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    spec = np.fft.rfft(frames, n=cfg.padded_window_size, axis=1)
    power = spec.real * spec.real
    power += spec.imag * spec.imag
    if not cfg.use_power:
        np.sqrt(power, out=power)
    mel = power.astype(np.float32, copy=False) @ mel_banks(cfg)
    if cfg.use_log_fbank:
        np.maximum(mel, FLT_EPS, out=mel)
        np.log(mel, out=mel)
    return mel


def compute_fbank(wave: np.ndarray, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """Log-Mel filter banks ``[num_frames, num_mel_bins]`` (float32) of one int16-scale waveform."""
    return compute_fbank_batch([wave], cfg)[0]


def compute_fbank_batch(
    waves: Sequence[np.ndarray], cfg: FbankConfig = FbankConfig(), seed: int | None = None
) -> list[np.ndarray]:
    """FBank of many waveforms at once: one framing pass, one batched rFFT, one Mel matmul.

    ``waves`` are 1-D int16-scale arrays at ``cfg.sample_rate``.  Returns one float32 matrix per
    waveform (``[0, num_mel_bins]`` if it is shorter than one window with ``snip_edges``).
    """
    rng = np.random.default_rng(cfg.dither_seed if seed is None else seed) if cfg.dither else None
    counts = []
    parts = []
    for w in waves:
        w = np.asarray(w)
        if w.ndim != 1:
            raise ValueError(f"expected a 1-D waveform, got shape {w.shape}")
        f = frame_signal(w.astype(np.float32, copy=False), cfg)
        counts.append(len(f))
        parts.append(f)
    total = sum(counts)
    if total == 0:
        return [np.zeros((0, cfg.num_mel_bins), dtype=np.float32) for _ in waves]
    frames = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    feats = _spectrum_to_fbank(_process_frames(frames, cfg, rng), cfg)
    return np.split(feats, np.cumsum(counts)[:-1]) if len(counts) > 1 else [feats]
