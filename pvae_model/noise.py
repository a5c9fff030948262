"""Additive noise on the fly: Kaldi's and lhotse's noise augmentation, done on the log-Mel features.

A share of the training utterances, drawn anew every epoch, is heard in noise: the noise's FBank
(Gaussian noise through the shards' own FBank configuration, so pre-emphasis, window and filters
are the ones the speech went through) is tilted to a power spectrum ``f ** -tilt`` (0 white, 1 pink,
2 brown), scaled to a signal-to-noise ratio and added to the utterance's raw FBank in the power
domain, ``log(exp(x) + exp(n))`` (the log-add of two uncorrelated sources; the cross term averages
out).  The SNR is measured as ``benchmarks/voice_conditions.py`` measures it on waveforms: the
mean power of the loudest 30 % of the utterance's frames against the noise's mean power.

Only FBank energies are needed, so no noise corpus and no copies: the noise is synthetic, the
speech is FSDD's (DEVELOPERS.md: train on FSDD and perturbations of it).  Draws come from a
caller's ``torch.Generator``, so a run is reproducible and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pvae_data.config import ConfigMixin

LOUD_SHARE = 0.3  # the SNR's signal: the loudest 30 % of frames (voice_conditions.py's measure)


@dataclass(frozen=True)
class NoiseConfig(ConfigMixin):
    """``prob``: the share of training utterances given noise each epoch (0 = off); the SNR (dB)
    drawn uniformly from [``snr_min``, ``snr_max``]; the noise's spectral tilt from
    [``tilt_min``, ``tilt_max``]."""

    prob: float = 0.0
    snr_min: float = 5.0
    snr_max: float = 25.0
    tilt_min: float = 0.0
    tilt_max: float = 2.0

    def __post_init__(self) -> None:
        for name in ("prob", "snr_min", "snr_max", "tilt_min", "tilt_max"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise ValueError(f"noise.{name} must be a number, got {v!r}")
        for name, lo, hi in (("prob", 0.0, 1.0), ("snr_min", -20.0, 80.0), ("snr_max", -20.0, 80.0),
                             ("tilt_min", 0.0, 3.0), ("tilt_max", 0.0, 3.0)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"noise.{name} must be in [{lo:g}, {hi:g}], got {getattr(self, name)}")
        for low, high in (("snr_min", "snr_max"), ("tilt_min", "tilt_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"noise.{low}/{high}: {low} {getattr(self, low)} is above {high} {getattr(self, high)}")

    @property
    def enabled(self) -> bool:
        return self.prob > 0


def bin_centres(fbank) -> np.ndarray:
    """The centre frequency (Hz) of each Mel filter of ``fbank`` (a ``pvae_data.fbank.FbankConfig``)."""
    from pvae_data.fbank import inverse_mel_scale, mel_scale, vtln_band

    high, _ = vtln_band(fbank)
    lo, hi = float(mel_scale(fbank.low_freq)), float(mel_scale(high))
    step = (hi - lo) / (fbank.num_mel_bins + 1)
    return np.asarray(inverse_mel_scale(lo + step * np.arange(1, fbank.num_mel_bins + 1)), np.float64)


def noise_bank(fbank, seconds: float = 8.0, seed: int = 0) -> torch.Tensor:
    """``[frames, bins]`` log-Mel of white Gaussian noise through ``fbank`` with a fixed tilt of 0,
    each frame shifted so that the bank's mean frame power is 1 (log 0)."""
    from pvae_data.fbank import compute_fbank

    wave = np.random.default_rng(seed).normal(0.0, 1000.0, int(seconds * fbank.sample_rate))
    feats = compute_fbank(wave.astype(np.float32), fbank).astype(np.float64)
    feats -= np.log(np.exp(feats).sum(axis=1).mean())
    return torch.from_numpy(feats)


def add_noise(raw: torch.Tensor, lengths: torch.Tensor, cfg: NoiseConfig, generator: torch.Generator,
              bank: torch.Tensor, centres: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``raw`` [B, T, F] log-Mel (``lengths`` [B]) with noise added to a random ``cfg.prob`` share
    of the utterances: ``(noisy copy, which [B] bool)``; padded frames and the others are as given."""
    b, t, f = raw.shape
    if bank.shape[1] != f:
        raise ValueError(f"noise: the noise bank has {bank.shape[1]} bins, the features {f}")
    hit = torch.rand(b, generator=generator, dtype=torch.float64) < cfg.prob
    snr = cfg.snr_min + (cfg.snr_max - cfg.snr_min) * torch.rand(b, generator=generator, dtype=torch.float64)
    tilt = cfg.tilt_min + (cfg.tilt_max - cfg.tilt_min) * torch.rand(b, generator=generator, dtype=torch.float64)
    start = torch.randint(0, bank.shape[0], (b,), generator=generator)
    log_f = torch.from_numpy(np.log(centres / 1000.0))  # [F]
    x = raw.to(torch.float64)
    out = x.clone()
    for i in torch.nonzero(hit).flatten().tolist():
        n = int(lengths[i])
        if n == 0:
            continue
        rows = (int(start[i]) + torch.arange(n)) % bank.shape[0]
        noise = bank[rows] - tilt[i] * log_f  # [n, F]
        power = torch.logsumexp(x[i, :n], dim=1)  # each frame's log power
        loud = torch.topk(power, max(1, int(np.ceil(LOUD_SHARE * n)))).values
        signal = torch.logsumexp(loud, 0) - np.log(len(loud))
        noise_power = torch.logsumexp(torch.logsumexp(noise, dim=1), 0) - np.log(n)
        gain = signal - noise_power - snr[i] * np.log(10.0) / 10.0
        out[i, :n] = torch.logaddexp(x[i, :n], noise + gain)
    return out.to(raw.dtype), hit


def renormalise(noisy: torch.Tensor, lengths: torch.Tensor, norms: list) -> torch.Tensor:
    """``noisy`` raw FBank [B, T, F] normalised as the clean utterances were: ``norms[b]`` is
    ``None`` for per-utterance CMVN (the noisy utterance's own mean and variance, as a new voice in
    noise is normalised at test time) or the ``(mean, std)`` its CMVN used.  Padded frames are 0."""
    from .normalize import normalize_utterance

    out = torch.zeros_like(noisy)
    for i, norm in enumerate(norms):
        n = int(lengths[i])
        if norm is None:
            out[i, :n] = torch.from_numpy(normalize_utterance(noisy[i, :n].numpy()))
        else:
            out[i, :n] = (noisy[i, :n] - norm[0]) / norm[1]
    return out
