"""Latent translation (Tian & Engel, 2019, arXiv 1902.08261): a small bridging VAE between the
latent spaces of two frozen, separately trained VAEs.

One shared encoder q(z' | z_d, d) and one shared decoder p(z_d | z', d), both conditioned on a
one-hot domain label d (0 = speech, the VAE-sp latent z1; 1 = images, the VAE-im latent z2).
Latents of different sizes are zero-padded to the larger one, so the networks really are shared.

Loss per domain batch (minimised):
    ||z_d - dec(z', d)||^2 / 2                      reconstruction (unit-variance Gaussian)
  + beta_kl  * KL(q(z' | z_d, d) || N(0, I))
  + beta_swd * SWD(z'_speech, z'_image)              makes the two domains overlap, no pairs needed
  + beta_cls * CE(W z', label)                       aligns the classes (uses the labels; 0 = off)

The networks are MLPs whose layers are gated residual blocks, h + sigmoid(g(h)) * f(h), the
"residual gated" layers of the paper's code (alantian/latent_transfer ``model_joint2.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..modules import kl_std_normal, reparameterize
from .base import ConfigMixin, ModelOutput


@dataclass
class BridgeConfig(ConfigMixin):
    z_bridge: int = 8  # the shared latent z' (the paper's runs: 8)
    hidden: int = 512
    layers: int = 4  # gated residual blocks in the encoder and in the decoder
    beta_kl: float = 0.005
    beta_swd: float = 1.0
    beta_cls: float = 0.05  # 0 = no labels (SWD alone aligns the domains)
    swd_projections: int = 64

    def __post_init__(self) -> None:
        if min(self.z_bridge, self.hidden, self.layers, self.swd_projections) <= 0:
            raise ValueError("z_bridge, hidden, layers and swd_projections must be positive")
        if min(self.beta_kl, self.beta_swd, self.beta_cls) < 0:
            raise ValueError("beta_kl, beta_swd and beta_cls must be >= 0")


DOMAINS = ("speech", "image")


class GatedResidual(nn.Module):
    """h + sigmoid(g(h)) * relu(f(h))."""

    def __init__(self, dim: int):
        super().__init__()
        self.f, self.g = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.sigmoid(self.g(h)) * torch.relu(self.f(h))


def _mlp(inp: int, hidden: int, out: int, layers: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), *[GatedResidual(hidden) for _ in range(layers)], nn.Linear(hidden, out))


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced (squared) 2-Wasserstein distance between two equally sized samples: the mean over
    random unit directions of the squared differences of the sorted 1-D projections."""
    if x.shape != y.shape:
        raise ValueError(f"SWD needs equally sized samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    theta = torch.randn(x.shape[1], projections, generator=generator).to(x)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return (px - py).pow(2).mean()


class Bridge(nn.Module):
    def __init__(self, cfg: BridgeConfig, z_dims: tuple[int, int]):
        super().__init__()
        self.cfg, self.z_dims = cfg, tuple(int(d) for d in z_dims)
        width = max(self.z_dims)
        self.enc = _mlp(width + 2, cfg.hidden, 2 * cfg.z_bridge, cfg.layers)
        self.dec = _mlp(cfg.z_bridge + 2, cfg.hidden, width, cfg.layers)
        self.cls = nn.Linear(cfg.z_bridge, 10)

    def _onehot(self, n: int, domain: int, like: torch.Tensor) -> torch.Tensor:
        d = torch.zeros(n, 2, dtype=like.dtype, device=like.device)
        d[:, domain] = 1.0
        return d

    def encode(self, z: torch.Tensor, domain: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z' | z_d, d): (mean, log-variance)."""
        pad = max(self.z_dims) - z.shape[1]
        h = torch.cat([nn.functional.pad(z, (0, pad)), self._onehot(len(z), domain, z)], dim=1)
        mu, logvar = self.enc(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, zb: torch.Tensor, domain: int) -> torch.Tensor:
        """Mean of p(z_d | z', d), in domain d's own size."""
        out = self.dec(torch.cat([zb, self._onehot(len(zb), domain, zb)], dim=1))
        return out[:, : self.z_dims[domain]]

    def transfer(self, z: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """Deterministic translation: the posterior mean of z' decoded in the target domain."""
        return self.decode(self.encode(z, source)[0], target)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        """``batch``: ``z_speech``, ``z_image`` (equal batch sizes) and ``y_speech``, ``y_image``."""
        cfg = self.cfg
        terms, zbs = {}, []
        total = 0.0
        for d, name in enumerate(DOMAINS):
            z = batch[f"z_{name}"]
            mu, lv = self.encode(z, d)
            zb = reparameterize(mu, lv)
            rec = 0.5 * (z - self.decode(zb, d)).pow(2).sum(1)
            kl = kl_std_normal(mu, lv)
            total = total + (rec + cfg.beta_kl * kl).mean()
            terms[f"rec_{name}"], terms[f"kl_{name}"] = rec.mean(), kl.mean()
            if cfg.beta_cls:
                ce = nn.functional.cross_entropy(self.cls(zb), batch[f"y_{name}"])
                total = total + cfg.beta_cls * ce
                terms[f"cls_{name}"] = ce
            zbs.append(zb)
        swd = sliced_wasserstein(zbs[0], zbs[1], cfg.swd_projections, generator)
        total = total + cfg.beta_swd * swd
        terms.update(swd=swd, loss=total)
        return ModelOutput(total, {k: float(v.detach()) for k, v in terms.items()})
