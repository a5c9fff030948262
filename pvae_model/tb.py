"""TensorBoard for every run the engine trains: the config as text, the HParams tab, generated
examples at each evaluation (the epoch scalars are written by :func:`pvae_model.run.log_epoch`)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml


def open_writer(path: Path, cfg, metric_names, fresh: bool):
    """A SummaryWriter on ``path`` (None when TensorBoard is not installed); a fresh run also gets
    its config as text and the HParams tab: the config beside the metrics the run logs as scalars
    of the same names (as Lightning does; ``add_hparams`` would write its own copy of each metric)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        return None
    writer = SummaryWriter(str(path))
    if fresh:
        writer.add_text("config", "```\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False) + "```", 0)
        for summary in hparams(flat_hparams(cfg), {k: 0.0 for k in metric_names}):
            writer.file_writer.add_summary(summary)
    return writer


def write_media(writer, media: dict, step: int) -> None:
    """A task's generated examples: ``{"images": {tag: [N, 1, H, W]}, "audio": {tag: (wave, rate)}}``."""
    for tag, images in media.get("images", {}).items():
        writer.add_images(tag, images, step)
    for tag, (wave, rate) in media.get("audio", {}).items():
        writer.add_audio(tag, torch.as_tensor(wave)[None], step, sample_rate=rate)
    writer.flush()


def flat_hparams(cfg) -> dict:
    """The config flattened to TensorBoard hparams (numbers, strings and booleans only)."""
    out = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(cfg.to_dict(), "")
    return out
