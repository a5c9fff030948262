"""A trained run directory: where its checkpoints are and how to get a model back from one.

``RUN_DIR/config.yaml`` (the resolved TrainConfig), ``checkpoints/{last,best}.pt``,
``metrics.jsonl``, ``train.log``, ``tb/``, ``eval/``.  ``load_model`` is what ``PVAE.from_run``
and the baselines' ``from_run`` call.
"""

from __future__ import annotations

import sys
from pathlib import Path


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """``checkpoint`` is "best", "last" or a path to a ``.pt`` file; "best" falls back to
    ``last.pt`` with a warning on stderr (no evaluation epoch has improved it yet)."""
    if str(checkpoint).endswith(".pt"):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        return path
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists():
        last = Path(run_dir) / "checkpoints" / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint (has {run_dir} been trained?)")
        if checkpoint != "last":
            print(f"warning: {run_dir}: no checkpoints/{checkpoint}.pt (no evaluation epoch improved it yet); "
                  f"using last.pt", file=sys.stderr)
        path = last
    return path


def load_model(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """(model in eval mode, TrainConfig, checkpoint dict) of a trained run."""
    from .models.baselines import build_model
    from .train import TrainConfig, load_checkpoint

    path = checkpoint_path(run_dir, checkpoint)
    ck = load_checkpoint(path, map_location=device)
    ck["loaded_from"] = str(path)  # what was read, after any fallback: reported next to the results
    cfg = TrainConfig.from_dict(ck["config"])
    model = build_model(cfg.model, cfg.pvae).to(device)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, cfg, ck


class FromRun:
    """``Model.from_run(run_dir, "best" | "last" | path)``: the trained model of a run directory."""

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
        model, cfg, _ = load_model(run_dir, checkpoint, device)
        if not isinstance(model, cls):
            raise ValueError(f"{run_dir} holds a {cfg.model} run ({type(model).__name__}), not a {cls.__name__}")
        return model
