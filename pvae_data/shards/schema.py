"""The shard format's one source of truth: its version, the datasets each modality's shard holds,
and reading ``index.json`` (version-checked).  Writer, readers and tools all take these from here;
``docs/shards.md`` describes the format for readers without our code.

  audio   feats [total_frames, D] float32|float16   concatenated frames of all utterances
          offsets [N] int64, lengths [N] int32      utterance i = feats[offsets[i] : offsets[i] + lengths[i]]
          keys [N] str, labels [N] int16 (0-9), speakers [N] str
  image   images [N, H, W] uint8, keys [N] str, labels [N] int16
  attrs   schema_version, modality, split, num_items, config (JSON), source_sha256, producer
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_VERSION = 1
MODALITIES = ("audio", "image")
AUDIO_DATASETS = {"feats", "offsets", "lengths", "keys", "labels", "speakers"}
IMAGE_DATASETS = {"images", "keys", "labels"}


def load_index(path: str | Path) -> tuple[Path, dict]:
    """``path`` is a shard directory or its ``index.json``."""
    path = Path(path)
    index_path = path / "index.json" if path.is_dir() else path
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path}: no index.json (incomplete or not a shard set)")
    index = json.loads(index_path.read_text())
    if index.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{index_path}: schema_version {index.get('schema_version')}, this reader reads {SCHEMA_VERSION}")
    return index_path.parent, index
