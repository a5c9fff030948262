"""``pvae-data``: the data pipeline's command line, a thin shell over the Python API.

One module per command group, as lhotse's ``bin/modes``: :mod:`.corpus` (prepare, download,
lhotse), :mod:`.features` (trim, perturb, fbank), :mod:`.align` (align-train, segment),
:mod:`.shards` (shard, info, validate, export), :mod:`.configs` (default-config); what they
share is :mod:`.base`.
"""

from . import align, configs, corpus, features, shards  # noqa: F401  (each registers its commands)
from .base import main

__all__ = ["main"]
