"""Corpus readers, one module per layout: each turns a corpus on disk (read from a
``PrepareConfig``: ``source`` and its own options) into ``Item``s (one per
input, rejected ones with their reason) for the ``prepare`` stage.  ``READERS`` maps a
``PrepareConfig.corpus`` name to its reader."""

from .fsdd import fsdd_items
from .kaldi import kaldi_items
from .list_file import LIST_FORMATS, list_items
from .tidigits import tidigits_items

READERS = {"fsdd": fsdd_items, "tidigits": tidigits_items, "list": list_items, "kaldi": kaldi_items}

__all__ = ["READERS", "LIST_FORMATS"]
