"""Writing one HDF5 shard of the public format (``docs/shards.md``, :mod:`pvae_data.shards.schema`),
and the config that says how items are packed.  The ``shard`` stage (:mod:`pvae_data.stages.shard`)
plans the shards and calls these."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from .. import __version__
from ..config import ConfigMixin
from ..io_utils import atomic_path
from .schema import SCHEMA_VERSION

STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class ShardConfig(ConfigMixin):
    """How items are packed; saved in ``index.json`` and in every shard's attributes."""

    max_items: int = 0  # items per shard (0 = no limit)
    max_bytes: int = 256 * 2**20  # payload bytes per shard (features or pixels)
    dtype: str = "float32"  # audio features: float32 | float16
    compression: str = "none"  # none | gzip | lzf
    compression_level: int = 4  # gzip only
    chunk_frames: int = 256  # rows per HDF5 chunk when compressed (~1-2 chunks per utterance)
    shuffle: bool = True  # seeded permutation of items before packing
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {self.dtype!r}")
        if self.compression not in ("none", "gzip", "lzf"):
            raise ValueError(f"compression must be none, gzip or lzf, got {self.compression!r}")
        if self.max_items < 0 or self.max_bytes <= 0 or self.chunk_frames <= 0:
            raise ValueError("max_items >= 0, max_bytes > 0 and chunk_frames > 0 are required")


    def h5_options(self) -> dict:
        if self.compression == "none":
            return {}
        opts = {"compression": self.compression}
        if self.compression == "gzip":
            opts["compression_opts"] = self.compression_level
        return opts


def _common_attrs(f: h5py.File, modality: str, split: str, n: int, cfg: dict, source_sha256: str) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["modality"] = modality
    f.attrs["split"] = split
    f.attrs["num_items"] = n
    f.attrs["config"] = json.dumps(cfg, sort_keys=True)
    f.attrs["source_sha256"] = source_sha256
    f.attrs["producer"] = f"pvae_data {__version__}"


def _ds(f: h5py.File, name: str, data, **kw):
    return f.create_dataset(name, data=data, track_times=False, **kw)


def write_audio_shard(path: Path, items: Iterable[np.ndarray], num_frames: int, dim: int, keys: list[str],
                      labels: list[int], speakers: list[str], split: str, cfg: ShardConfig, attrs_cfg: dict,
                      source_sha256: str, block_bytes: int = 8 * 2**20) -> list[int]:
    """Stream utterance matrices into one shard through a fixed-size block buffer.

    ``feats`` is created at its final size and filled block by block, so memory stays at one
    block however large the shard is.  Returns the utterance lengths.
    """
    rows = max(1, block_bytes // (dim * np.dtype(cfg.dtype).itemsize))
    buf = np.empty((rows, dim), dtype=cfg.dtype)
    lengths: list[int] = []
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            _common_attrs(f, "audio", split, len(keys), attrs_cfg, source_sha256)
            chunks = None if cfg.compression == "none" else (min(cfg.chunk_frames, num_frames), dim)
            feats = f.create_dataset("feats", shape=(num_frames, dim), dtype=cfg.dtype, chunks=chunks,
                                     track_times=False, **cfg.h5_options())  # contiguous when uncompressed: mmap-able
            written = fill = 0
            for m in items:
                lengths.append(len(m))
                pos = 0
                while pos < len(m):
                    take = min(rows - fill, len(m) - pos)
                    buf[fill:fill + take] = m[pos:pos + take]
                    fill, pos = fill + take, pos + take
                    if fill == rows:
                        feats[written:written + fill] = buf
                        written, fill = written + fill, 0
            if fill:
                feats[written:written + fill] = buf[:fill]
                written += fill
            if written != num_frames or len(lengths) != len(keys):
                raise ValueError(f"{path.name}: got {written} frames of {len(lengths)} items, planned {num_frames} of {len(keys)}")
            lens = np.array(lengths, dtype=np.int32)
            _ds(f, "offsets", np.concatenate([[0], np.cumsum(lens[:-1], dtype=np.int64)]).astype(np.int64))
            _ds(f, "lengths", lens)
            _ds(f, "keys", np.array(keys, dtype=object), dtype=STR)
            _ds(f, "labels", np.array(labels, dtype=np.int16))
            _ds(f, "speakers", np.array(speakers, dtype=object), dtype=STR)
    return lengths


def write_image_shard(path: Path, images: np.ndarray, keys: list[str], labels: np.ndarray, split: str,
                      cfg: ShardConfig, attrs_cfg: dict, source_sha256: str) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            _common_attrs(f, "image", split, len(images), attrs_cfg, source_sha256)
            if cfg.compression == "none":
                _ds(f, "images", images)
            else:
                _ds(f, "images", images, chunks=(min(1024, len(images)),) + images.shape[1:], **cfg.h5_options())
            _ds(f, "keys", np.array(keys, dtype=object), dtype=STR)
            _ds(f, "labels", labels.astype(np.int16))
