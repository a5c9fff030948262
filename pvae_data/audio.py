"""Audio inspection and loading.

``inspect_audio`` is the gatekeeper of the ``prepare`` stage: it opens a file *and reads every
sample*, so a file that passes will also load later.  ``load_audio`` returns mono float32 on the
**int16 scale** (``[-32768, 32767]``), which is what Kaldi's feature code (and ``fbank.py``)
expects.

NIST SPHERE is recognised by its ``NIST_1A`` header, not by the file name (LDC corpora such as
TIDIGITS ship SPHERE files named ``*.wav``).  libsndfile reads uncompressed SPHERE, but it does
*not* notice shorten/wavpack compression: it happily returns the compressed bytes as PCM noise.
We therefore parse the SPHERE header ourselves and refuse compressed files with a clear reason.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf

SPHERE_MAGIC = b"NIST_1A"
_BLOCK_FRAMES = 1 << 18  # frames per read while scanning a whole file
_COMPRESSIONS = ("shorten", "wavpack", "shortpack")


class AudioError(ValueError):
    """A file that cannot be used as audio; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep it picklable across processes
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    num_samples: int  # per channel
    duration: float  # seconds, num_samples / sample_rate
    format: str  # libsndfile major format: "WAV", "NIST" (SPHERE), "FLAC", ...
    is_sphere: bool
    subtype: str = ""  # libsndfile subtype, e.g. "PCM_16"
    # Samples per channel the header declares, where it says (WAV data chunk, SPHERE
    # sample_count); more than ``num_samples`` means the file was cut short.
    declared_samples: int | None = None

    @property
    def truncated(self) -> bool:
        return self.declared_samples is not None and self.declared_samples > self.num_samples

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# SPHERE header


def read_sphere_header(path: str | os.PathLike) -> dict[str, str | int | float] | None:
    """Parse a NIST SPHERE header; ``None`` if the file does not start with ``NIST_1A``.

    Raises ``AudioError`` for a SPHERE magic followed by a malformed header.
    """
    with open(path, "rb") as f:
        head = f.read(1024)
        if not head.startswith(SPHERE_MAGIC):
            return None
        lines = head.split(b"\n")
        try:
            size = int(lines[1].strip())
        except (IndexError, ValueError):
            raise AudioError(path, "SPHERE header malformed (no header size)") from None
        if size < 16 or size > (1 << 20):
            raise AudioError(path, f"SPHERE header malformed (header size {size})")
        if size > len(head):
            head += f.read(size - len(head))
    if len(head) < size:
        raise AudioError(path, f"SPHERE header truncated ({len(head)} of {size} bytes)")
    fields: dict[str, str | int | float] = {}
    for raw in head[:size].split(b"\n")[2:]:
        line = raw.decode("latin-1").strip()
        if line == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].startswith("-"):
            continue
        key, typ, val = parts
        try:
            if typ == "-i":
                fields[key] = int(val)
            elif typ == "-r":
                fields[key] = float(val)
            else:
                fields[key] = val
        except ValueError:
            fields[key] = val
    else:
        raise AudioError(path, "SPHERE header malformed (no end_head)")
    fields["_header_size"] = size
    return fields


def _check_sphere(path: str | os.PathLike) -> bool:
    """True if ``path`` is SPHERE; raises ``AudioError`` if it is a compressed/odd SPHERE."""
    hdr = read_sphere_header(path)
    if hdr is None:
        return False
    coding = str(hdr.get("sample_coding", "pcm")).lower()
    for comp in _COMPRESSIONS:
        if comp in coding:
            raise AudioError(path, f"SPHERE {comp}-compressed: decompress with sph2pipe first")
    if "embedded" in coding:
        raise AudioError(path, f"SPHERE compressed (sample_coding {coding!r}): decompress with sph2pipe first")
    return True


def declared_samples(path: str | os.PathLike, is_sphere: bool) -> int | None:
    """Samples per channel that the header promises: SPHERE ``sample_count``, or a RIFF WAV's
    ``data`` chunk size / block align.  ``None`` where the header does not say (other formats,
    streamed WAVs with a 0 / 0xFFFFFFFF size).  libsndfile reads a cut file without complaint,
    so this is how a truncated file is told from a short one."""
    import struct

    if is_sphere:
        hdr = read_sphere_header(path) or {}
        n = hdr.get("sample_count")
        return int(n) if isinstance(n, int) and n > 0 else None
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size)
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
                if size % 2:
                    f.seek(1, os.SEEK_CUR)
            elif cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size % 2), os.SEEK_CUR)


def _libsndfile_msg(e: Exception) -> str:
    msg = getattr(e, "error_string", None)
    return str(msg if msg else e).strip()


def _looks_like_text(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte char cut at the 4096 boundary is still text
        try:
            head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _open(path: str | os.PathLike) -> tuple[sf.SoundFile, bool]:
    """Open with libsndfile after the pre-checks; returns (SoundFile, is_sphere)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise AudioError(p, "file not found")
    if os.path.isdir(p):
        raise AudioError(p, "is a directory")
    try:
        size = os.path.getsize(p)
        if size == 0:
            raise AudioError(p, "empty (0 bytes)")
        is_sphere = _check_sphere(p)
        text = _looks_like_text(p)
    except OSError as e:
        raise AudioError(p, f"unreadable: {e.strerror or e}") from None
    try:
        f = sf.SoundFile(p)
    except (sf.LibsndfileError, RuntimeError) as e:
        msg = _libsndfile_msg(e)
        if text:
            raise AudioError(p, f"not audio: looks like a text file (libsndfile: {msg})") from None
        raise AudioError(p, f"unreadable: {msg}") from None
    except OSError as e:
        raise AudioError(p, f"unreadable: {e.strerror or e}") from None
    return f, is_sphere


# --------------------------------------------------------------------------------------------


MIN_SAMPLE_RATE = 1000  # below this a header is damaged, not speech (telephone audio is 8 kHz)
MAX_SAMPLE_RATE = 768000


def _check_rate(path: str, sr: int) -> None:
    """A header's sample rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] is damaged or crafted."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(path, f"implausible sample rate {sr} Hz (accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
                               f"a damaged header?)")


def inspect_audio(path: str | os.PathLike) -> AudioInfo:
    """Open ``path`` and read all of it; return its ``AudioInfo`` or raise ``AudioError``.

    Rejected: missing/unreadable files, non-audio files, compressed SPHERE, zero-length or
    header-only files ("empty"), files whose samples are all exactly 0 ("zero energy") and
    float files holding NaN/inf.
    """
    p = os.fspath(path)
    f, is_sphere = _open(p)
    with f:
        sr, ch, fmt, subtype = int(f.samplerate), int(f.channels), str(f.format), str(f.subtype)
        _check_rate(p, sr)
        if ch <= 0:
            raise AudioError(p, f"bad channel count {ch}")
        dtype = "int16" if subtype == "PCM_16" else "float32"
        n = 0
        nonzero = False
        mono_nonzero = ch == 1
        finite = True
        try:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype=dtype, always_2d=True)
                if len(block) == 0:
                    break
                n += len(block)
                if not nonzero and np.any(block):
                    nonzero = True
                if not mono_nonzero and np.any(block.astype(np.float64).sum(axis=1)):
                    mono_nonzero = True
                if dtype == "float32" and finite and not np.all(np.isfinite(block)):
                    finite = False
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(p, f"unreadable: {_libsndfile_msg(e)} (after {n} samples)") from None
    if n == 0:
        raise AudioError(p, "empty (0 samples)")
    if not finite:
        raise AudioError(p, "non-finite samples (NaN or inf)")
    if not nonzero:
        raise AudioError(p, "zero energy (all samples are 0)")
    if not mono_nonzero:
        raise AudioError(p, f"zero energy after downmixing {ch} channels to mono (the channels cancel: "
                            f"a polarity-inverted copy?)")
    try:
        declared = declared_samples(p, is_sphere)
    except (OSError, AudioError):
        declared = None
    return AudioInfo(
        path=p,
        sample_rate=sr,
        channels=ch,
        num_samples=n,
        duration=n / sr,
        format=fmt,
        is_sphere=is_sphere,
        subtype=subtype,
        declared_samples=declared,
    )


def load_audio(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    target_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Load ``path`` as mono float32 on the int16 scale; returns ``(samples, sample_rate)``.

    * PCM_16 files are read as int16 and converted exactly; other encodings are read as float32
      (libsndfile's [-1, 1) scale) and multiplied by 32768.
    * Multi-channel audio is downmixed by the mean over channels.
    * ``start``/``end`` (seconds of the original file) select ``[start, end)``; sample indices
      are ``round(t * sample_rate)``; an ``end`` past the end of the file is clipped.
    * If ``target_rate`` is given and differs from the file's rate, the (sliced) signal is
      resampled with soxr, quality "HQ"; the returned rate is then ``target_rate``.
    """
    p = os.fspath(path)
    if target_rate is not None and int(target_rate) <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    f, _ = _open(p)
    with f:
        sr, n, subtype = int(f.samplerate), int(f.frames), str(f.subtype)
        if n <= 0:
            raise AudioError(p, "empty (0 samples)")
        _check_rate(p, sr)  # resampling 1 Hz "audio" would take GBs
        s = 0 if start is None else int(round(float(start) * sr))
        e = n if end is None else min(n, int(round(float(end) * sr)))
        if s < 0:
            raise AudioError(p, f"bad segment: start {start} < 0")
        if s >= n:
            raise AudioError(p, f"bad segment: start {start}s is past the end ({n / sr:.6f}s)")
        if e <= s:
            raise AudioError(p, f"bad segment: end {end} <= start {start}")
        pcm16 = subtype == "PCM_16"
        try:
            if s:
                f.seek(s)
            data = f.read(e - s, dtype="int16" if pcm16 else "float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(p, f"unreadable: {_libsndfile_msg(err)}") from None
    if len(data) == 0:
        raise AudioError(p, "empty (0 samples)")
    if data.shape[1] == 1:
        x = data[:, 0].astype(np.float32)
    else:
        x = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not pcm16:
        x *= np.float32(32768.0)
    if target_rate is not None and int(target_rate) != sr:
        import soxr

        x = soxr.resample(x, sr, int(target_rate), quality="HQ").astype(np.float32, copy=False)
        sr = int(target_rate)
    return np.ascontiguousarray(x, dtype=np.float32), sr
