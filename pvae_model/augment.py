"""SpecAugment (Park et al. 2019) on padded FBank batches: time and frequency masks in training,
and a per-utterance warp of the Mel axis (VTLP, Jaitly & Hinton 2013, drawn anew every epoch).

Masks and warps are drawn from a caller's ``torch.Generator`` so a run is reproducible and resumes
exactly.  Masked cells are set to 0, the mean of CMVN-normalised features.  A mask is never wider
than the utterance it falls in: a time width is capped at the utterance's length.

The warp is Kaldi's VTLN warp (``pvae_data.fbank.vtln_warp_freq``, the one ``pvae-data perturb
--vtlp`` applies to the filters) applied to the features themselves: bin ``k`` of the warped copy
is the original log-Mel read, by linear interpolation between bins, at the Mel position of the
frequency Kaldi's warped filter ``k`` would be centred on.  A factor above 1 moves the spectral
envelope up (formants of a shorter vocal tract), below 1 down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pvae_data.config import ConfigMixin


@dataclass(frozen=True)
class SpecAugmentConfig(ConfigMixin):
    """``freq_masks`` masks of up to ``freq_width`` Mel bins and ``time_masks`` masks of up to
    ``time_width`` frames per utterance (widths drawn uniformly from 0..width); each utterance's
    Mel axis warped by a factor drawn uniformly from [``warp_min``, ``warp_max``] (both 1: no
    warp).  All 0 and 1: off."""

    # experiments that were not kept (ConfigMixin.retired): a warp factor changing along the Mel axis
    # (warp_spread), each end of what the encoders read moved by up to N frames (edge_frames)
    retired = {"warp_spread": 0.0, "edge_frames": 0}
    retired_note = "docs/study/voices.md has the study; commits 895edee (warp_spread) and 1146695 (edge_frames) have the code"
    key_prefix = "spec_augment."

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0
    warp_min: float = 1.0
    warp_max: float = 1.0

    def __post_init__(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"spec_augment.{name} must be an integer >= 0, got {v!r}")
        for name in ("warp_min", "warp_max"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 2:
                raise ValueError(f"spec_augment.{name} must be a factor in (0, 2], got {v!r}")
        if self.warp_min > self.warp_max:
            raise ValueError(f"spec_augment.warp_min {self.warp_min} is above warp_max {self.warp_max}")

    @property
    def warps(self) -> bool:
        return not (self.warp_min == self.warp_max == 1.0)

    @property
    def enabled(self) -> bool:
        return (bool(self.freq_masks and self.freq_width) or bool(self.time_masks and self.time_width)
                or self.warps)

    def check_features(self, feat_dim: int) -> None:
        if self.freq_width > feat_dim:
            raise ValueError(f"spec_augment.freq_width {self.freq_width} is wider than the {feat_dim} "
                             f"feature bins")


def warp_source_bins(warps, fbank) -> np.ndarray:
    """For each Mel bin of ``fbank`` (a ``pvae_data.fbank.FbankConfig``), the fractional bin of the
    unwarped features that Kaldi's filter warped by ``warps`` is centred on (clipped to the bins):
    ``[F]`` for one warp, ``[B, F]`` for ``B`` of them."""
    from pvae_data.fbank import mel_scale, vtln_band, vtln_warp_mel

    n = fbank.num_mel_bins
    high, v_high = vtln_band(fbank)
    lo, hi = float(mel_scale(fbank.low_freq)), float(mel_scale(high))
    step = (hi - lo) / (n + 1)
    warps = np.asarray(warps, np.float32)[..., None]
    moved = vtln_warp_mel(lo + step * np.arange(1, n + 1), fbank.low_freq, high, fbank.vtln_low, v_high, warps)
    return np.clip((moved - lo) / step - 1.0, 0.0, n - 1.0)


def mel_warp(x: torch.Tensor, warps: torch.Tensor, fbank) -> torch.Tensor:
    """``x`` [B, T, F] with utterance ``b``'s Mel axis warped by ``warps[b]`` (see the module doc)."""
    src = torch.from_numpy(warp_source_bins(warps.numpy(), fbank)).to(x.dtype)  # [B, F]
    left = src.floor().long().clamp(max=x.shape[2] - 1)
    right = (left + 1).clamp(max=x.shape[2] - 1)
    frac = (src - left.to(x.dtype))[:, None, :]
    idx = lambda i: i[:, None, :].expand(-1, x.shape[1], -1)  # noqa: E731
    return torch.gather(x, 2, idx(left)) * (1 - frac) + torch.gather(x, 2, idx(right)) * frac


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig,
                 generator: torch.Generator, fbank=None) -> torch.Tensor:
    """A masked (and warped) copy of ``x`` [B, T, F] (``lengths`` [B] frames of each utterance);
    ``fbank``, the features' ``FbankConfig``, is needed for a warp."""
    if not cfg.enabled:
        return x
    b, t, f = x.shape
    cfg.check_features(f)
    if cfg.warps:
        if fbank is None:
            raise ValueError("spec_augment.warp_min/warp_max need the features' fbank configuration")
        if fbank.num_mel_bins != f:
            raise ValueError(f"spec_augment: the fbank configuration has {fbank.num_mel_bins} bins, the features {f}")
        warps = cfg.warp_min + (cfg.warp_max - cfg.warp_min) * torch.rand(b, generator=generator, dtype=torch.float64)
        x = mel_warp(x, warps, fbank)
    keep = torch.ones(b, t, f, dtype=torch.bool)
    frames = torch.arange(t)[None, :]
    bins = torch.arange(f)[None, :]
    for _ in range(cfg.freq_masks if cfg.freq_width else 0):
        w = torch.randint(0, cfg.freq_width + 1, (b,), generator=generator)
        f0 = (torch.rand(b, generator=generator) * (f - w + 1).to(torch.float32)).long()
        keep &= ~((bins >= f0[:, None]) & (bins < (f0 + w)[:, None]))[:, None, :]
    lens = lengths.to(torch.long)
    for _ in range(cfg.time_masks if cfg.time_width else 0):
        w = torch.minimum(torch.randint(0, cfg.time_width + 1, (b,), generator=generator), lens)
        t0 = (torch.rand(b, generator=generator) * (lens - w + 1).to(torch.float32)).long()
        keep &= ~((frames >= t0[:, None]) & (frames < (t0 + w)[:, None]))[:, :, None]
    return x * keep.to(x.dtype)
