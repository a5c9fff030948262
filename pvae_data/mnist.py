"""MNIST IDX files: parsed and validated by hand (big-endian header, magic 2051 / 2049).

IDX layout: 4-byte magic (0x00 0x00 dtype ndim; 0x08 = uint8), then ``ndim`` big-endian
uint32 dimensions, then the raw data.  Images are magic 2051 (ndim 3), labels 2049 (ndim 1).
Gzip-compressed files (``.gz``) are read transparently, detected by their magic bytes.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IdxError(ValueError):
    """A malformed IDX file; the message names the file and the problem."""


def _read_bytes(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IdxError(f"{path}: corrupt gzip ({e})") from None
    return raw


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file into a uint8 array of its declared shape, checking every field."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise IdxError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or dtype_code != 0x08:
        raise IdxError(f"{path}: bad magic 0x{magic:08x} (need unsigned-byte IDX, 0x0000080N)")
    if expect_magic is not None and magic != expect_magic:
        raise IdxError(f"{path}: magic {magic}, expected {expect_magic}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    n = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != n:
        raise IdxError(f"{path}: header says {dims} = {n} bytes of data, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@dataclass(frozen=True)
class MnistSplit:
    split: str
    images: np.ndarray  # [N, 28, 28] uint8
    labels: np.ndarray  # [N] uint8, 0..9


def find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        p = directory / name
        if p.exists():
            return p
    raise FileNotFoundError(f"{directory}: no {stem}[.gz]")


IMAGE_SHAPE = (28, 28)  # what MNIST is, and what the models' image encoders and decoders take


def load_mnist(directory: str | Path, split: str) -> MnistSplit:
    """Load and validate one split (``train``: 60,000 images; ``test``: 10,000)."""
    directory = Path(directory)
    img_stem, lab_stem = SPLIT_FILES[split]
    images = read_idx(find_idx(directory, img_stem), IMAGES_MAGIC)
    labels = read_idx(find_idx(directory, lab_stem), LABELS_MAGIC)
    if images.ndim != 3:
        raise IdxError(f"{split} images: expected 3 dimensions, got shape {images.shape}")
    if images.shape[1:] != IMAGE_SHAPE:
        raise IdxError(f"{find_idx(directory, img_stem)}: images are {images.shape[1]}x{images.shape[2]}, "
                       f"MNIST images are {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxError(f"{split}: {len(images)} images but labels of shape {labels.shape}")
    if labels.size and labels.max() > 9:
        raise IdxError(f"{split} labels: value {int(labels.max())} out of range 0..9")
    return MnistSplit(split, images, labels)
