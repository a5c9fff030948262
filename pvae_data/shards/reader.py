"""Random-access readers over shard sets, safe in PyTorch DataLoader workers.

File handles are opened lazily and per process (keyed by pid), never inherited across a fork.
Uncompressed audio shards store ``feats`` contiguously, so the reader memory-maps it and one
utterance is a numpy slice; compressed shards go through h5py with a chunk cache.
The per-item index (offsets, lengths, labels, keys, speakers) is read once into memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import h5py
import numpy as np

from .schema import load_index


class AudioItem(NamedTuple):
    feats: np.ndarray  # [T, D] float32
    label: int
    key: str
    speaker: str


class ImageItem(NamedTuple):
    image: np.ndarray  # [H, W] uint8
    label: int
    key: str


class ShardError(ValueError):
    """A shard file that cannot be read or disagrees with ``index.json``; the message names it."""


@dataclass
class _Shard:
    path: Path
    start: int  # global index of its first item
    n: int
    mmap_offset: int | None  # byte offset of a contiguous, uncompressed payload dataset


class _ShardSet:
    modality = ""
    payload = ""

    def __init__(self, path: str | Path, split: str | None = None):
        self.root, self.index = load_index(path)
        if self.index["modality"] != self.modality:
            raise ValueError(f"{self.root} holds {self.index['modality']} shards, not {self.modality}")
        entries = [e for e in self.index["shards"] if split is None or e["split"] == split]
        if split is not None and not entries:
            have = sorted({e["split"] for e in self.index["shards"]})
            raise ValueError(f"{self.root}: no '{split}' shards (splits: {have})")
        self.split = split
        self.shards: list[_Shard] = []
        cols: dict[str, list] = {}
        start = 0
        for e in entries:
            p = self.root / e["file"]
            try:
                with h5py.File(p, "r") as f:
                    ds = f[self.payload]
                    contiguous = ds.chunks is None and ds.compression is None
                    self._check(f, e["num_items"])
                    self._read_columns(f, cols)
                    self.payload_dtype = ds.dtype
                    self.payload_tail = ds.shape[1:]
                    self.shards.append(_Shard(p, start, e["num_items"], ds.id.get_offset() if contiguous else None))
            except (OSError, KeyError, ValueError) as err:  # h5py: bad superblock, missing dataset, ...
                raise ShardError(f"{p}: {err}") from None
            start += e["num_items"]
        self._columns = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
        self._shard_of = np.repeat(np.arange(len(self.shards)), [s.n for s in self.shards])
        self._pid = None
        self._handles: list = []

    def _check(self, f: h5py.File, num_items: int) -> None:
        """The index's item count against the file's datasets (shapes only: cheap), so an edited
        or stale ``index.json`` cannot shift one item's key onto another's data."""
        n = f["labels"].shape[0]
        if n != num_items:
            raise ValueError(f"index.json says {num_items} items, the file holds {n} labels")
        for name in self.columns:
            if f[name].shape[0] != n:
                raise ValueError(f"dataset '{name}' has {f[name].shape[0]} rows, 'labels' has {n}")

    columns: tuple[str, ...] = ("keys",)

    def _read_columns(self, f: h5py.File, cols: dict) -> None:
        cols.setdefault("labels", []).append(f["labels"][()].astype(np.int64))
        cols.setdefault("keys", []).append(np.array(f["keys"].asstr()[()], dtype=object))

    def __len__(self) -> int:
        return len(self._shard_of)

    @property
    def labels(self) -> np.ndarray:
        return self._columns["labels"]

    @property
    def keys(self) -> np.ndarray:
        return self._columns["keys"]

    def _open(self) -> list:
        """Per-process handles: reopened after a fork, so DataLoader workers never share one."""
        if self._pid != os.getpid():
            self._handles = []
            for s in self.shards:
                if s.mmap_offset is not None:
                    size = int(np.prod((self._rows(s),) + self.payload_tail))
                    self._handles.append(np.memmap(s.path, dtype=self.payload_dtype, mode="r",
                                                   offset=s.mmap_offset, shape=(size,))
                                         .reshape((self._rows(s),) + self.payload_tail))
                else:
                    f = h5py.File(s.path, "r", rdcc_nbytes=64 * 2**20, rdcc_nslots=100_003)
                    self._handles.append(f[self.payload])
            self._pid = os.getpid()
        return self._handles

    def _rows(self, s: _Shard) -> int:
        return s.n

    def __getstate__(self) -> dict:  # pickled into workers without open handles
        d = dict(self.__dict__)
        d["_handles"], d["_pid"] = [], None
        return d

    def _locate(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        s = int(self._shard_of[i])
        return s, i - self.shards[s].start


class AudioShards(_ShardSet):
    """``AudioShards(dir, split)[i] -> AudioItem(feats [T, D] float32, label, key, speaker)``."""

    modality, payload = "audio", "feats"
    columns = ("keys", "lengths", "offsets", "speakers")

    def _check(self, f: h5py.File, num_items: int) -> None:
        super()._check(f, num_items)
        lengths, offsets, frames = f["lengths"][()], f["offsets"][()], f["feats"].shape[0]
        if len(lengths) and ((offsets < 0).any() or (lengths < 1).any() or (offsets + lengths).max() > frames):
            raise ValueError(f"offsets/lengths point outside the {frames} frames of 'feats'")

    def _read_columns(self, f: h5py.File, cols: dict) -> None:
        super()._read_columns(f, cols)
        cols.setdefault("lengths", []).append(f["lengths"][()].astype(np.int64))
        cols.setdefault("offsets", []).append(f["offsets"][()].astype(np.int64))
        cols.setdefault("speakers", []).append(np.array(f["speakers"].asstr()[()], dtype=object))
        cols.setdefault("frames", []).append(np.array([f["feats"].shape[0]]))

    def _rows(self, s: _Shard) -> int:
        return int(self._columns["frames"][self.shards.index(s)])

    @property
    def lengths(self) -> np.ndarray:
        """Frames per utterance, for length bucketing without reading features."""
        return self._columns["lengths"]

    @property
    def speakers(self) -> np.ndarray:
        return self._columns["speakers"]

    @property
    def cmvn(self) -> dict | None:
        return self.index.get("cmvn")

    def __getitem__(self, i: int) -> AudioItem:
        s, _ = self._locate(i)
        i = i + len(self) if i < 0 else i
        o = self._columns["offsets"][i]
        feats = np.array(self._open()[s][o:o + self._columns["lengths"][i]], dtype=np.float32)  # writable copy
        return AudioItem(feats, int(self.labels[i]), self.keys[i], self.speakers[i])


class ImageShards(_ShardSet):
    """``ImageShards(dir, split)[i] -> ImageItem(image [28, 28] uint8, label, key)``."""

    modality, payload = "image", "images"
    columns = ("keys", "images")

    def __getitem__(self, i: int) -> ImageItem:
        s, j = self._locate(i)
        i = i + len(self) if i < 0 else i
        return ImageItem(np.array(self._open()[s][j]), int(self.labels[i]), self.keys[i])

    def all_images(self) -> np.ndarray:
        """Every image at once ([N, H, W] uint8): MNIST is small enough to hold in memory."""
        return np.concatenate([np.asarray(h[:]) for h in self._open()]) if self.shards else np.zeros((0, 28, 28), np.uint8)


def collate_audio(items: Sequence[AudioItem]) -> dict:
    """A DataLoader ``collate_fn`` for :class:`AudioShards` items of different lengths:
    ``{"feats": [B, T_max, D] float32 (zero-padded), "lengths": [B] int64, "labels": [B] int64,
    "keys": [str], "speakers": [str]}``."""
    import torch

    if not items:
        raise ValueError("collate_audio: empty batch")
    lengths = torch.tensor([len(it.feats) for it in items], dtype=torch.int64)
    dim = items[0].feats.shape[1]
    feats = torch.zeros(len(items), int(lengths.max()), dim, dtype=torch.float32)
    for i, it in enumerate(items):
        feats[i, : len(it.feats)] = torch.from_numpy(np.asarray(it.feats, dtype=np.float32))
    return {"feats": feats, "lengths": lengths, "labels": torch.tensor([it.label for it in items], dtype=torch.int64),
            "keys": [it.key for it in items], "speakers": [it.speaker for it in items]}


class BucketBatchSampler:
    """Batches of similar length: less padding, same epoch-to-epoch randomness.

    Each epoch: a seeded permutation, cut into pools of ``pool_batches`` batches; each pool is
    sorted by length and cut into batches; batch order is shuffled.  ``set_epoch`` changes the
    permutation (as DistributedSampler does).  Works as a DataLoader ``batch_sampler``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, pool_batches: int = 50, num_replicas: int = 1, rank: int = 0):
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.pool = drop_last, max(1, pool_batches) * batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        out = []
        for p in range(0, n, self.pool):
            pool = order[p:p + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            for b in range(0, len(pool), self.batch_size):
                batch = pool[b:b + self.batch_size].tolist()
                if len(batch) == self.batch_size or not self.drop_last:
                    out.append(batch)
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        if self.num_replicas > 1:
            # DDP, as torch's DistributedSampler: every rank draws the same batch list (same seed and
            # epoch) and takes every num_replicas-th batch; all ranks get the same number of batches
            # (the list is cut to a multiple, so no rank waits on a collective another never joins).
            usable = len(out) - len(out) % self.num_replicas
            out = out[self.rank:usable:self.num_replicas]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())

    def padding_fraction(self) -> float:
        """Fraction of padded frames if every batch is padded to its longest item."""
        real = padded = 0
        for b in self.batches():
            ls = self.lengths[b]
            real += int(ls.sum())
            padded += int(ls.max()) * len(ls)
        return 1 - real / padded if padded else 0.0
