"""What every model shares: the output contract, config (de)serialisation, loading from a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pvae_data.config import ConfigMixin  # noqa: F401  (re-exported for the models)

from ..checkpoints import checkpoint_path, load_checkpoint


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


class FromRun:
    """``Model.from_run(run_dir, "best" | "last" | path)``: the trained model of a run directory
    (MultiVae's ``load_from_folder``).  Each model class names the run configs' ``model`` values it
    is built for (``run_models``) and builds itself from one (``from_config``), which is also what
    :func:`pvae_model.models.build_model` calls."""

    run_models: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, name: str, cfg):
        raise NotImplementedError

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
        ck = load_checkpoint(checkpoint_path(run_dir, checkpoint), map_location=device)
        if ck["config"]["model"] not in cls.run_models:
            raise ValueError(f"{run_dir} holds a {ck['config']['model']} run, not a {cls.__name__}")
        return cls.from_checkpoint(ck, device)

    @classmethod
    def from_checkpoint(cls, ck: dict, device: str = "cpu"):
        """The model a loaded checkpoint holds, on ``device``, in eval mode (``from_run`` and
        :func:`pvae_model.run.load_model` both end here)."""
        name = ck["config"]["model"]
        model = cls.from_config(name, ck["config"]["pvae"]).to(device)
        model.load_state_dict(ck["model"])
        return model.eval()
