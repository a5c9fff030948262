"""SpecAugment (Park et al. 2019) on padded FBank batches: time and frequency masks in training.

Masks are drawn from a caller's ``torch.Generator`` so a run is reproducible and resumes exactly.
Masked cells are set to 0, the mean of CMVN-normalised features.  A mask is never wider than the
utterance it falls in: a time width is capped at the utterance's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pvae_data.config import ConfigMixin


@dataclass(frozen=True)
class SpecAugmentConfig(ConfigMixin):
    """``freq_masks`` masks of up to ``freq_width`` Mel bins and ``time_masks`` masks of up to
    ``time_width`` frames per utterance (widths drawn uniformly from 0..width).  All 0: off."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0

    def __post_init__(self) -> None:
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"spec_augment.{name} must be an integer >= 0, got {v!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.freq_masks and self.freq_width) or bool(self.time_masks and self.time_width)

    def check_features(self, feat_dim: int) -> None:
        if self.freq_width > feat_dim:
            raise ValueError(f"spec_augment.freq_width {self.freq_width} is wider than the {feat_dim} "
                             f"feature bins")


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """A masked copy of ``x`` [B, T, F] (``lengths`` [B] frames of each utterance)."""
    if not cfg.enabled:
        return x
    b, t, f = x.shape
    cfg.check_features(f)
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
