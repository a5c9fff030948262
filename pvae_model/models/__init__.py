"""One module per model, each with its config dataclass (MultiVae-style layout), and the
registry that builds one by the name a run config gives it.

Every model's ``forward(batch)`` returns ``ModelOutput(loss, metrics)``, where ``metrics`` holds
every term of the objective as a float, for logging; every model loads from a run directory with
``Model.from_run(run_dir)``.
"""

from __future__ import annotations

from torch import nn

from .baselines import JMVAE, UnimodalVAE
from .pvae import PVAE, PVAEConfig

REGISTRY = {name: cls for cls in (PVAE, JMVAE, UnimodalVAE) for name in cls.run_models}
MODALITIES = {"pvae": ("audio", "image"), "jmvae-kl": ("audio", "image"), "vae-sp": ("audio",), "vae-im": ("image",)}


def build_model(name: str, cfg: PVAEConfig) -> nn.Module:
    """``pvae`` | ``vae-sp`` | ``vae-im`` | ``jmvae-kl`` (PVAE (no beta) is ``pvae`` with beta = 0)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(MODALITIES)})")
    return REGISTRY[name].from_config(name, cfg)
