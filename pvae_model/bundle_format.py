"""What a bundle's files are called and hold, shared by the PVAE's bundle (:mod:`pvae_model.bundle`)
and a bridge's (:mod:`pvae_model.bundle_bridge`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoints import RunIOError

FORMAT = "pvae-bundle"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
VOCODER_WEIGHTS = "vocoder.safetensors"
MAX_CONFIG_BYTES = 4 << 20
VOCODER = {"kind": "griffin-lim", "n_iter": 48}  # pvae_model.eval.audio_synth.fbank_to_wave


def run_metrics(run_dir) -> dict:
    p = Path(run_dir) / "eval" / "metrics.json"
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def image_policy() -> dict:
    from .frontend import IMAGE_POLICY

    return dict(IMAGE_POLICY)


def pct(v) -> str:
    if isinstance(v, dict):
        v = v.get("mean")
    return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else "–"


def state_from_bundle(model: torch.nn.Module, state: dict, path) -> torch.nn.Module:
    """Load ``state`` into ``model``; a mismatch is a one-line error naming the bundle."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RunIOError(f"{path}: the weights do not fit the model its config describes "
                         f"({str(e).splitlines()[0][:160]})") from None
    return model.eval()
