"""Shared pytest fixtures: the real FSDD corpus, small corpus copies and audio-file writers.

Everything a test writes goes under its own ``tmp_path``.  Tests that need the real FSDD
recordings are skipped when ``/work/shared/data/fsdd/recordings`` (or ``$PVAE_FSDD``) is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

DATA_ROOT = Path(os.environ.get("PVAE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
FSDD_ROOT = Path(os.environ.get("PVAE_FSDD", DATA_ROOT / "fsdd"))
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
# (digit, take) pairs copied per speaker by ``fsdd_subset``: takes 0-4 are test, 5-49 train.
FSDD_SUBSET_PAIRS = ((0, 0), (1, 4), (5, 2), (7, 5), (3, 10), (8, 30), (9, 49))


@pytest.fixture(scope="session")
def fsdd_recordings() -> Path:
    """The real FSDD ``recordings/`` directory (test skipped if missing)."""
    rec = FSDD_ROOT / "recordings"
    if not rec.is_dir() or not any(rec.glob("*.wav")):
        pytest.skip(f"FSDD recordings not found at {rec}")
    return rec


@pytest.fixture(scope="session")
def fsdd_files(fsdd_recordings: Path) -> list[str]:
    """Paths (str) of all real FSDD recordings, sorted by file name."""
    return sorted(str(p) for p in fsdd_recordings.glob("*.wav"))


@pytest.fixture(scope="session")
def fsdd_audio(fsdd_recordings: Path) -> Callable[[int, str, int], tuple[np.ndarray, int]]:
    """``fsdd_audio(digit, speaker, take) -> (int16 samples, sample_rate)`` of a real recording."""

    def load(digit: int, speaker: str, take: int) -> tuple[np.ndarray, int]:
        data, sr = sf.read(fsdd_recordings / f"{digit}_{speaker}_{take}.wav", dtype="int16")
        return data, sr

    return load


@pytest.fixture(scope="session")
def fsdd_subset_files() -> list[tuple[int, str, int]]:
    """The ``(digit, speaker, take)`` of every file ``fsdd_subset`` copies."""
    return [(d, spk, t) for spk in FSDD_SPEAKERS for d, t in FSDD_SUBSET_PAIRS]


@pytest.fixture
def fsdd_subset(tmp_path: Path, fsdd_recordings: Path) -> Path:
    """A copy of 42 real FSDD files (7 per speaker, test and train takes) as ``<root>/recordings``.

    Returns ``<root>``; add files to ``<root>/recordings`` to extend it.
    """
    root = tmp_path / "fsdd"
    rec = root / "recordings"
    rec.mkdir(parents=True)
    for spk in FSDD_SPEAKERS:
        for digit, take in FSDD_SUBSET_PAIRS:
            name = f"{digit}_{spk}_{take}.wav"
            shutil.copyfile(fsdd_recordings / name, rec / name)
    return root


@pytest.fixture(scope="session")
def write_audio() -> Callable[..., Path]:
    """``write_audio(path, data, sample_rate, format=None, subtype="PCM_16") -> path``.

    ``data`` is int16 (or float in [-1, 1)), shape ``(n,)`` or ``(n, channels)``; ``format``
    is a libsndfile major format ("WAV", "NIST", "FLAC", ...), by default from the extension
    (``.wav`` -> WAV), so ``format="NIST"`` writes a SPHERE file under a ``.wav`` name.
    """

    def write(path, data, sample_rate: int, format: str | None = None, subtype: str = "PCM_16") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.asarray(data), sample_rate, format=format, subtype=subtype)
        return path

    return write


def make_sphere_shorten(path: Path, sample_rate: int = 20000, num_samples: int = 4000) -> Path:
    """A SPHERE header claiming shorten compression followed by junk bytes (as LDC ships)."""
    hdr = (
        "NIST_1A\n   1024\n"
        "channel_count -i 1\n"
        f"sample_rate -i {sample_rate}\n"
        "sample_n_bytes -i 2\nsample_sig_bits -i 16\n"
        f"sample_count -i {num_samples}\n"
        "sample_byte_format -s2 01\n"
        "sample_coding -s26 pcm,embedded-shorten-v2.00\n"
        "end_head\n"
    ).encode("ascii")
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hdr.ljust(1024, b" ") + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(scope="session")
def write_sphere_shorten() -> Callable[..., Path]:
    """``write_sphere_shorten(path, sample_rate=20000, num_samples=4000) -> path``."""
    return make_sphere_shorten


@pytest.fixture
def tidigits_tree(tmp_path: Path, fsdd_audio, write_audio) -> dict:
    """A small TIDIGITS-layout corpus built from real FSDD audio, as 20 kHz NIST SPHERE ``*.wav``.

    Layout ``<root>/tidigits/{train,test}/{man,woman,boy,girl}/<spk>/<digits><a|b>.wav``; the
    digits of each name are spoken by concatenating FSDD recordings (``z``/``o`` use digit 0).
    Returns ``{"root": <root>, "files": {relative path under tidigits/: digit string}}``.
    """
    import soxr

    layout = {
        "train/man/ae/1o7a.wav": "george",
        "train/man/ae/z1oa.wav": "george",
        "train/man/ae/2b.wav": "george",
        "train/woman/ac/98a.wav": "jackson",
        "train/boy/bd/5zb.wav": "lucas",
        "test/girl/gf/3a.wav": "nicolas",
        "test/man/ah/o4za.wav": "theo",
        "test/woman/ck/66b.wav": "yweweler",
    }
    root = tmp_path / "ldc"
    files = {}
    for i, (rel, spk) in enumerate(sorted(layout.items())):
        digits = Path(rel).stem[:-1]
        parts = []
        for j, c in enumerate(digits):
            d = 0 if c in "zo" else int(c)
            x, sr = fsdd_audio(d, spk, (5 + i + j) % 50)
            parts.append(x.astype(np.float32))
        wave = np.concatenate(parts)
        y = soxr.resample(wave, sr, 20000, quality="HQ")
        y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
        write_audio(root / "tidigits" / rel, y, 20000, format="NIST")
        files[rel] = digits
    return {"root": root, "files": files}


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory, fsdd_files) -> tuple[Path, Path]:
    """Audio shards of 150 real FSDD digits (every 20th file) and image shards of the real MNIST
    files, for the model tests; ``(audio_dir, image_dir)``."""
    from pvae_data.stages.fbank import FbankStageConfig, compute_features
    from pvae_data.io_utils import write_jsonl
    from pvae_data.shards.writer import ShardConfig
    from pvae_data.stages.shard import shard_audio, shard_mnist

    mnist = DATA_ROOT / "mnist"
    if not mnist.is_dir():
        pytest.skip("MNIST not found")
    tmp = tmp_path_factory.mktemp("shards")
    recs = []
    for p in fsdd_files[::20]:
        digit, spk, take = Path(p).stem.split("_")
        recs.append({"id": f"{spk}-{digit}-{int(take):02d}", "audio": p, "speaker": spk,
                     "transcript": WORDS[int(digit)], "split": "test" if int(take) <= 4 else "train"})
    write_jsonl(tmp / "m.jsonl", recs)
    compute_features(tmp / "m.jsonl", tmp / "fbank", FbankStageConfig(), show_progress=False)
    shard_audio(tmp / "fbank", tmp / "audio", show_progress=False)
    shard_mnist(mnist, tmp / "images", ShardConfig(), show_progress=False)
    return tmp / "audio", tmp / "images"


def validate_kaldi_data_dir(d: Path, cmvn_from_feats: bool = True) -> None:
    """The checks of Kaldi's utils/validate_data_dir.sh (--no-wav): every file LC_ALL=C sorted with
    unique keys, the same utterance set everywhere, spk2utt = utt2spk inverted, utt2spk sorted by
    speaker too (speaker-prefixed ids), feats.scp/cmvn.scp readable with the right speakers."""
    import kaldiio

    def table(name):
        lines = (d / name).read_text().splitlines()
        keys = [ln.split()[0] for ln in lines]
        assert [k.encode() for k in keys] == sorted(k.encode() for k in keys), f"{name} not sorted"
        assert len(set(keys)) == len(keys), f"{name} has duplicate keys"
        return {ln.split()[0]: ln.split()[1:] for ln in lines}, lines

    utt2spk, lines = table("utt2spk")
    assert lines == sorted(lines, key=lambda ln: (ln.split()[1].encode(), ln.encode())), "utt2spk not sorted by speaker"
    spk2utt, _ = table("spk2utt")
    assert {s: sorted(u) for s, u in spk2utt.items()} == \
        {s: sorted(u for u, (sp,) in utt2spk.items() if sp == s) for s in {v[0] for v in utt2spk.values()}}
    for name in ("text", "feats.scp", "utt2label", "segments"):
        if (d / name).is_file():
            assert set(table(name)[0]) == set(utt2spk), name
    for name in ("wav.scp", "reco2dur"):
        if (d / name).is_file():
            table(name)
    cmvn, _ = table("cmvn.scp")
    assert set(cmvn) == set(spk2utt)
    feats = kaldiio.load_scp(str(d / "feats.scp"))
    for spk, utts in spk2utt.items() if cmvn_from_feats else ():  # cmvn stats are the speaker's sums (compute-cmvn-stats --spk2utt)
        st = kaldiio.load_mat(cmvn[spk][0])
        x = np.concatenate([feats[u] for u in utts]).astype(np.float64)
        assert st.shape == (2, x.shape[1] + 1) and st[0, -1] == len(x)
        assert np.allclose(st[0, :-1], x.sum(0)) and np.allclose(st[1, :-1], (x * x).sum(0))


@pytest.fixture
def forbid_unpickling(monkeypatch):
    """Within ``with forbid_unpickling():``, any pickle load or ``torch.load`` fails the test: a
    bundle must load without one."""
    from contextlib import contextmanager

    @contextmanager
    def forbidden():
        import pickle

        import torch

        def no_pickle(*a, **k):
            raise AssertionError("a bundle was unpickled")

        with monkeypatch.context() as mp:
            for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
                mp.setattr(mod, name, no_pickle)
            yield

    return forbidden

