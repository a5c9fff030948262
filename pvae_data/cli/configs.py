"""``pvae-data``: `default-config`: every stage's defaults as YAML."""

from __future__ import annotations

import sys

import click

from .base import CONTEXT, main


@main.command("default-config", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["prepare", "fbank", "vad", "trim", "perturb", "align-train", "segment",
                                           "shard"]))
def default_config(what: str) -> None:
    """Print a stage's default config as YAML (edit it and pass --config; JSON is read too).

    fbank: `fbank --config`; vad or trim: `trim --config`; align-train:
    `align-train --config`; segment: `segment --config`. Training configs:
    `pvae-model default-config`.
    """
    import yaml

    if what == "fbank":
        from ..fbank import FbankConfig

        d = FbankConfig().to_dict()
    elif what == "perturb":
        from ..stages.perturb import PerturbConfig

        d = PerturbConfig().to_dict()
    elif what == "align-train":
        from ..align.train import AlignTrainConfig

        d = AlignTrainConfig().to_dict()
    elif what == "segment":
        from ..stages.segment import SegmentConfig

        d = SegmentConfig().to_dict()
    elif what == "shard":
        from ..shards.writer import ShardConfig

        d = ShardConfig().to_dict()
    elif what == "prepare":
        from ..stages.prepare import PrepareConfig

        d = {k: v for k, v in PrepareConfig("fsdd", ".").to_dict().items() if k not in ("corpus", "source")}
    else:
        from ..vad import VadConfig

        d = VadConfig().to_dict()
    sys.stdout.write(yaml.safe_dump(d, sort_keys=False))
