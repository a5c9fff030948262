"""Energy voice-activity detection, used to trim the silence around each spoken digit.

Two backends share one boundary logic (:func:`speech_bounds` / :func:`trim_bounds`):

* ``"energy"``: Kaldi's ``compute-vad`` (``src/ivector/voice-activity-detection.cc``, after the
  2016 fix of kaldi-asr/kaldi#383 that made ``--vad-frames-context`` count the *neighbouring*
  frames).  Kaldi reads log-energy from column 0 of MFCC features; we compute the same quantity
  (``--raw-energy``: DC-removed, before pre-emphasis and windowing) on a separate energy track so
  the VAD does not depend on any feature configuration.
* ``"webrtc"``: Google's WebRTC GMM VAD through ``webrtcvad``.

Every function is pure (no file I/O).  Waveforms are float arrays on the **int16 scale**
(``[-32768, 32767]``) as everywhere in this package: Kaldi's ``energy_threshold`` is an absolute
log-energy and only means what Kaldi means on that scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

FLT_EPS = float(np.finfo(np.float32).eps)
WEBRTC_RATES = (8000, 16000, 32000, 48000)
WEBRTC_FALLBACK_RATE = 16000
BACKENDS = ("energy", "webrtc")
_WEBRTC_PRIME_S = 0.3


class NoSpeechError(ValueError):
    """The waveform holds nothing to keep: empty, digital silence, or no detected speech."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VadConfig:
    """VAD options; energy defaults are Kaldi's ``compute-vad`` ones except those noted."""

    backend: str = "energy"  # "energy" | "webrtc"
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    energy_threshold: float = 5.0  # Kaldi default
    energy_mean_scale: float = 0.5  # Kaldi default
    # Kaldi: 0.  We use 2 (a 50 ms majority vote, with proportion 0.6 = 3 of 5 frames): an
    # isolated click or breath frame is dropped and a 1-2 frame dip inside a digit is bridged,
    # while onsets/offsets move by < 1 frame (measured in tests/test_vad.py).
    frames_context: int = 2
    proportion_threshold: float = 0.6  # Kaldi default
    # webrtc: 0 (least aggressive) .. 3 (most aggressive about calling frames non-speech).
    webrtc_mode: int = 3
    webrtc_frame_ms: int = 10  # 10 ms = finest onset resolution and shortest hangover
    margin_s: float = 0.05  # kept on each side by trim_bounds (soft onsets, release tails)
    min_speech_s: float = 0.05  # less detected speech than this => no speech (clicks, pops)
    # Voiced runs shorter than this are ignored when locating the first/last speech frame.
    min_run_ms: float = 30.0
    refine_db: float = 3.0
    refine_gap_ms: float = 60.0
    min_snr_db: float = 5.0
    refine_window_ms: float = 10.0
    refine_shift_ms: float = 2.5
    refine_onset: float = 0.5
    refine_offset: float = 0.5
    floor_percentile: float = 10.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not (self.frame_length_ms > 0 and self.frame_shift_ms > 0):
            raise ValueError(
                f"frame_length_ms and frame_shift_ms must be > 0, got "
                f"{self.frame_length_ms} and {self.frame_shift_ms}"
            )
        if self.energy_mean_scale < 0:
            raise ValueError(f"energy_mean_scale must be >= 0 (Kaldi asserts it), got {self.energy_mean_scale}")
        if int(self.frames_context) != self.frames_context or self.frames_context < 0:
            raise ValueError(f"frames_context must be an integer >= 0, got {self.frames_context}")
        if not (0.0 < self.proportion_threshold < 1.0):
            raise ValueError(f"proportion_threshold must be in (0, 1) as in Kaldi, got {self.proportion_threshold}")
        if self.webrtc_mode not in (0, 1, 2, 3) or isinstance(self.webrtc_mode, bool):
            raise ValueError(f"webrtc_mode must be 0, 1, 2 or 3, got {self.webrtc_mode!r}")
        if self.webrtc_frame_ms not in (10, 20, 30) or isinstance(self.webrtc_frame_ms, bool):
            raise ValueError(f"webrtc_frame_ms must be 10, 20 or 30 (webrtcvad's only sizes), got {self.webrtc_frame_ms!r}")
        if self.margin_s < 0:
            raise ValueError(f"margin_s must be >= 0, got {self.margin_s}")
        if self.min_speech_s < 0:
            raise ValueError(f"min_speech_s must be >= 0, got {self.min_speech_s}")
        if self.min_run_ms < 0:
            raise ValueError(f"min_run_ms must be >= 0, got {self.min_run_ms}")

    def window_size(self, sample_rate: int) -> int:
        """Samples per energy frame; Kaldi truncates ``sr * ms / 1000`` with int()."""
        return int(sample_rate * 0.001 * self.frame_length_ms)

    def window_shift(self, sample_rate: int) -> int:
        return int(sample_rate * 0.001 * self.frame_shift_ms)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VadConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VadConfig fields: {sorted(unknown)}")
        return cls(**d)


def _as_wave(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape}")
    return wave


def _frame_sizes(sample_rate: int, cfg: VadConfig) -> tuple[int, int]:
    size, shift = cfg.window_size(sample_rate), cfg.window_shift(sample_rate)
    if size < 2 or shift < 1:
        raise ValueError(f"frame length/shift too short for {sample_rate} Hz: window={size}, shift={shift} samples")
    return size, shift


def frame_log_energy(wave: np.ndarray, sample_rate: int, cfg: VadConfig) -> np.ndarray:
    """Kaldi raw log-energy per frame (``snip_edges=True``): ``log(max(sum((x - mean(x))^2), eps))``.

    DC removal per frame as in Kaldi's ``ProcessWindow``; no dither, so the result is
    deterministic and digital silence sits at exactly ``log(FLT_EPS)``.
    """
    wave = _as_wave(wave)
    size, shift = _frame_sizes(sample_rate, cfg)
    if len(wave) < size:
        return np.zeros(0, np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64, copy=False), size)[::shift]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.einsum("ij,ij->i", frames, frames)
    return np.log(np.maximum(energy, FLT_EPS)).astype(np.float32)


def energy_vad(log_energy: np.ndarray, cfg: VadConfig) -> np.ndarray:
    """Kaldi ``ComputeVadEnergy``: frame t is voiced if enough frames around it are loud.

    threshold = energy_threshold + energy_mean_scale * mean(log_energy); frame t is voiced iff
    ``#{t2 in [t-c, t+c] ∩ [0, T) : e[t2] > threshold} >= proportion * |[t-c, t+c] ∩ [0, T)|``.
    The threshold and the proportion product are computed in float32 like Kaldi's ``BaseFloat``
    so decisions match Kaldi bit for bit, also on ties.
    """
    e = np.asarray(log_energy, dtype=np.float32)
    T = e.shape[0]
    if T == 0:
        return np.zeros(0, bool)
    f32 = np.float32
    thr = f32(cfg.energy_threshold)
    if cfg.energy_mean_scale != 0.0:
        # Kaldi: energy_threshold += scale * Sum() / T, Sum accumulated in double, returned as float.
        thr = f32(thr + f32(f32(cfg.energy_mean_scale) * f32(np.sum(e, dtype=np.float64))) / f32(T))
    loud = (e > thr).astype(np.int64)
    c = int(cfg.frames_context)
    cs = np.concatenate(([0], np.cumsum(loud)))
    t = np.arange(T)
    lo = np.maximum(t - c, 0)
    hi = np.minimum(t + c, T - 1)
    num = cs[hi + 1] - cs[lo]
    den = (hi - lo + 1).astype(np.float32)
    return num.astype(np.float32) >= den * f32(cfg.proportion_threshold)


def _webrtc_input(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """int16 samples at a rate webrtcvad accepts (resampled to 16 kHz otherwise)."""
    x = np.asarray(wave, dtype=np.float64)
    rate = int(sample_rate)
    if rate not in WEBRTC_RATES:
        import soxr

        x = soxr.resample(x, rate, WEBRTC_FALLBACK_RATE)
        rate = WEBRTC_FALLBACK_RATE
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16), rate


def webrtc_vad(wave: np.ndarray, sample_rate: int, cfg: VadConfig) -> tuple[np.ndarray, float]:
    """WebRTC decisions on consecutive, non-overlapping frames; returns (voiced, hop in seconds).

    Frame i covers ``[i * hop, (i + 1) * hop)`` seconds; a trailing partial frame is dropped.
    """
    import webrtcvad

    wave = _as_wave(wave)
    x, rate = _webrtc_input(wave, sample_rate)
    n = rate * cfg.webrtc_frame_ms // 1000
    hop = cfg.webrtc_frame_ms / 1000.0
    num = len(x) // n
    if num == 0:
        return np.zeros(0, bool), hop
    vad = webrtcvad.Vad(cfg.webrtc_mode)
    step = 2 * n
    k = min(num, int(round(_WEBRTC_PRIME_S / hop)))
    if k:
        prime = x[: k * n][::-1].tobytes()
        for i in range(k):
            vad.is_speech(prime[i * step : (i + 1) * step], rate)
    buf = x[: num * n].tobytes()
    out = np.fromiter(
        (vad.is_speech(buf[i * step : (i + 1) * step], rate) for i in range(num)), dtype=bool, count=num
    )
    return out, hop


def _runs(voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and (exclusive) end indices of the runs of True."""
    d = np.diff(np.concatenate(([0], voiced.astype(np.int8), [0])))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def _first_last(voiced: np.ndarray, min_run: int) -> tuple[int, int] | None:
    """First and last voiced frame, ignoring runs shorter than ``min_run`` frames."""
    starts, ends = _runs(voiced)
    keep = (ends - starts) >= max(min_run, 1)
    if not keep.any():
        return None
    return int(starts[keep][0]), int(ends[keep][-1] - 1)


# Where inside the first/last voiced frame the speech boundary lies, measured on padded FSDD
# digits (tests/test_vad.py, see _tune in benchmarks/): fractions of the frame, see speech_bounds.
_ENERGY_ONSET = 0.5
_ENERGY_OFFSET = 0.5
_WEBRTC_ONSET = 0.0
_WEBRTC_OFFSET = 1.0


def _voiced_intervals(wave: np.ndarray, sample_rate: int, cfg: VadConfig) -> np.ndarray:
    """Backend-voiced runs (>= min_run_ms) as ``[k, 2]`` sample intervals ``[start, end)``."""
    if cfg.backend == "energy":
        size, shift = _frame_sizes(sample_rate, cfg)
        voiced = energy_vad(frame_log_energy(wave, sample_rate, cfg), cfg)
        min_run = int(np.ceil(cfg.min_run_ms / cfg.frame_shift_ms - 1e-9))
        st, en = _runs(voiced)
        keep = (en - st) >= max(min_run, 1)
        st, en = st[keep], en[keep]
        a = st * shift + int(round(_ENERGY_ONSET * size))
        b = (en - 1) * shift + int(round(_ENERGY_OFFSET * size))
    else:
        voiced, hop = webrtc_vad(wave, sample_rate, cfg)
        min_run = int(np.ceil(cfg.min_run_ms / cfg.webrtc_frame_ms - 1e-9))
        st, en = _runs(voiced)
        keep = (en - st) >= max(min_run, 1)
        st, en = st[keep], en[keep]
        a = np.rint((st + _WEBRTC_ONSET) * hop * sample_rate).astype(np.int64)
        b = np.rint((en - 1 + _WEBRTC_OFFSET) * hop * sample_rate).astype(np.int64)
    iv = np.clip(np.stack([a, b], axis=1).astype(np.int64), 0, len(wave))
    return iv[iv[:, 1] > iv[:, 0]]


def _db_track(wave: np.ndarray, sample_rate: int, cfg: VadConfig) -> tuple[np.ndarray, int, int]:
    size = max(2, int(sample_rate * 0.001 * cfg.refine_window_ms))
    shift = max(1, int(sample_rate * 0.001 * cfg.refine_shift_ms))
    if len(wave) < size:
        return np.zeros(0), size, shift
    fr = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64, copy=False), size)[::shift]
    fr = fr - fr.mean(axis=1, keepdims=True)
    e = np.einsum("ij,ij->i", fr, fr)
    return 10.0 * np.log10(np.maximum(e, FLT_EPS)), size, shift


def _merge_gaps(st: np.ndarray, en: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    if len(st) == 0:
        return st, en
    new = np.concatenate(([True], st[1:] - en[:-1] > gap))
    return st[new], en[np.concatenate((new[1:], [True]))]


def speech_bounds(wave: np.ndarray, sample_rate: int, cfg: VadConfig = VadConfig()) -> tuple[int, int] | None:
    """Detected speech ``[start, end)`` in samples of ``wave``, or None when there is none."""
    wave = _as_wave(wave)
    n = len(wave)
    if n == 0:
        return None
    iv = _voiced_intervals(wave, sample_rate, cfg)
    if len(iv) == 0:
        return None
    db, size, shift = _db_track(wave, sample_rate, cfg)
    if len(db) == 0:
        return None
    floor = np.percentile(db, cfg.floor_percentile)
    if cfg.refine_db > 0:
        st, en = _runs(db > floor + cfg.refine_db)
        st, en = _merge_gaps(st, en, int(round(cfg.refine_gap_ms / cfg.refine_shift_ms)))
        ra = st * shift + int(round(cfg.refine_onset * size))
        rb = (en - 1) * shift + int(round(cfg.refine_offset * size))
        # keep regions overlapping a voiced interval
        hit = (ra[:, None] < iv[None, :, 1]) & (rb[:, None] > iv[None, :, 0])
        keep = hit.any(axis=1)
        if not keep.any():
            return None
        j = np.flatnonzero(keep)
        start, end = int(ra[j[0]]), int(rb[j[-1]])
        peak = max(db[st[i]:en[i]].max() for i in j)
    else:
        start, end = int(iv[0, 0]), int(iv[-1, 1])
        peak = db[min(start // shift, len(db) - 1): max(end // shift, start // shift + 1)].max()
    if peak - floor < cfg.min_snr_db:
        return None
    start, end = max(0, min(start, n)), max(0, min(end, n))
    if end - start < cfg.min_speech_s * sample_rate or end <= start:
        return None
    return start, end


def trim_bounds(wave: np.ndarray, sample_rate: int, cfg: VadConfig = VadConfig()) -> tuple[int, int]:
    """Speech bounds widened by ``margin_s`` on each side and clipped to the waveform.

    Raises :class:`NoSpeechError` instead of returning an empty span, so callers cannot write
    zero-length utterances by accident.
    """
    wave = _as_wave(wave)
    if len(wave) == 0:
        raise NoSpeechError("empty waveform")
    if not np.any(wave):
        raise NoSpeechError("all-zero waveform (digital silence)")
    b = speech_bounds(wave, sample_rate, cfg)
    if b is None:
        raise NoSpeechError(f"no speech detected by the {cfg.backend!r} VAD")
    margin = int(round(cfg.margin_s * sample_rate))
    start, end = max(0, b[0] - margin), min(len(wave), b[1] + margin)
    assert end > start
    return start, end
