"""What every model shares: the output contract and config (de)serialisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch


@dataclass
class ModelOutput:
    loss: torch.Tensor  # scalar to minimise
    metrics: dict  # every term, detached floats


class ConfigMixin:
    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)


def cyclic_derangement(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation with no fixed point: each sample's negative is another sample."""
    p = torch.randperm(n, generator=generator, device="cpu").to(device)
    sigma = torch.empty_like(p)
    sigma[p] = p.roll(-1)
    return sigma
