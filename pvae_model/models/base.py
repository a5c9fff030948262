"""What every model shares: the output contract and config (de)serialisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pvae_data.config import ConfigMixin  # noqa: F401  (re-exported for the models)


@dataclass
class ModelOutput:
    loss: torch.Tensor  # scalar to minimise
    metrics: dict  # every term, detached floats


def cyclic_derangement(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation with no fixed point: each sample's negative is another sample."""
    p = torch.randperm(n, generator=generator, device="cpu").to(device)
    sigma = torch.empty_like(p)
    sigma[p] = p.roll(-1)
    return sigma
