"""Voice-activity detection used to trim the silence around each spoken digit.

Two *detectors* decide which frames hold speech:

* ``"energy"``: Kaldi's ``compute-vad`` (``src/ivector/voice-activity-detection.cc``, with the
  2016 fix of kaldi-asr/kaldi#383 that made ``--vad-frames-context`` count the *neighbouring*
  frames' energies).  Kaldi reads log-energy from column 0 of MFCC features; we compute the same
  quantity (Kaldi's raw energy: DC-removed, before pre-emphasis and windowing) on a separate
  energy track, so the VAD does not depend on any feature configuration.
* ``"webrtc"``: Google's WebRTC GMM VAD through ``webrtcvad``.

Both detectors only *find* the speech; :func:`speech_bounds` then places the edges with a shared
boundary refinement, because neither detector's frames alone put the edges within 30 ms often
enough (padding test, ``refine_db=0``, all 3,000 files: Kaldi 90-94 % of starts and 93-95 % of
ends in -75..-70 dBFS noise, but < 3 % in -60..-50 dBFS noise, where its threshold lies below the
noise; WebRTC 83-86 % / 67-71 %, its hangover varying around the 15-150 ms we subtract).
The refinement is a double-threshold endpoint search (Rabiner & Sambur, 1975): on a fine
10 ms / 2.5 ms energy track, estimate the background as the 10th percentile, mark frames more
than ``refine_db`` above it, bridge gaps up to ``refine_gap_ms`` (stop closures in "six",
"eight"), and keep the regions that overlap a detected speech run, last ``min_run_ms``, peak
``min_snr_db`` above the background and no more than ``drop_below_peak_db`` below the loudest
region.  The speech bounds span the kept regions.  ``refine_db=0`` turns the refinement off and
maps the detector's frames to samples instead.

Every function is pure (no file I/O).  Waveforms are float arrays on the **int16 scale**
(``[-32768, 32767]``), as everywhere in this package: Kaldi's ``energy_threshold`` is an
absolute log-energy and only means what Kaldi means on that scale.

Defaults were tuned on real FSDD digits padded with 0.2-1.0 s of noise: ``tests/test_vad.py``
checks and prints the numbers (``pytest tests/test_vad.py -rP``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import ConfigMixin, check_field_types

FLT_EPS = float(np.finfo(np.float32).eps)
BACKENDS = ("energy", "webrtc")
WEBRTC_RATES = (8000, 16000, 32000, 48000)  # the only rates webrtcvad accepts
WEBRTC_FALLBACK_RATE = 16000  # other rates are resampled to this

# Boundary refinement track: 10 ms windows are short enough to place an edge to a few ms and
# long enough (80 samples at 8 kHz) that white-noise frame energies scatter by only ~0.7 dB,
# so `refine_db` = 3 dB above the 10th percentile is ~3 standard deviations above the noise.
_REFINE_SHIFT_MS = 2.5
_REFINE_BLOCKS = 4  # window = 4 shifts = 10 ms
_FLOOR_PERCENTILE = 10.0
# Where an edge lies inside the first/last 10 ms window above the floor: measured median error
# about 0 ms against known insertion points in low noise (tests/test_vad.py).
_REFINE_ONSET = 0.75  # fraction of the window after its start
_REFINE_OFFSET = 0.25
# Detector frame -> sample mapping, used for the detected runs (and as the bounds when
# refine_db = 0).  Measured on padded FSDD: the speech onset lies at a median 0.5-0.6 of the way
# into Kaldi's first voiced 25 ms frame, the offset 0.5-0.7 into the last one, so both use the
# frame centre.  WebRTC frames do not overlap: its first voiced frame starts at the onset
# (median within 4 ms for modes 0-2); its last voiced frame ends a mode-dependent hangover after
# the speech, measured (median, low noise, 8 and 16 kHz) per mode and frame length below.
_ENERGY_ONSET = 0.5
_ENERGY_OFFSET = 0.5
_WEBRTC_END_LAG_MS = {  # mode -> {frame_ms: ms}
    0: {10: 140, 20: 140, 30: 150},
    1: {10: 140, 20: 140, 30: 150},
    2: {10: 65, 20: 90, 30: 80},
    3: {10: 15, 20: 40, 30: 40},
}
# WebRTC starts from generic noise models and reports the first 70-180 ms as speech whenever the
# background is not digital silence.  We prime it on the time-reversed first 300 ms, which
# leaves it adapted to the actual background when it reaches sample 0.
_WEBRTC_PRIME_S = 0.3


class NoSpeechError(ValueError):
    """The waveform holds nothing to keep: empty, digital silence, or no detected speech."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.reason,))


@dataclass(frozen=True)
class VadConfig(ConfigMixin):
    """VAD options.  Kaldi's names and defaults except where noted (reasons in the comments)."""

    backend: str = "energy"  # "energy" | "webrtc"
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    # Kaldi default.  On its own, Kaldi's threshold (5 + 0.5 * mean log-energy) lies *below*
    # background noise at -60..-45 dBFS, so the detector also fires on noise; that is harmless
    # here because a refined region must also rise min_snr_db above the background floor.
    # Measured 5..8: 5-7 equal on the padding test, 8 slightly worse, and >= 8 finds no speech
    # in 2 real (flat, quiet, silence-free) FSDD digits: a stationary input is voiced only if
    # its log-energy exceeds 2 * threshold.
    energy_threshold: float = 5.0
    energy_mean_scale: float = 0.5  # Kaldi default
    # Kaldi default 0.  Contexts 0..5 measured the same on the padding test (the refinement
    # places the edges), and min_run_ms already drops isolated loud frames, so we keep Kaldi's.
    frames_context: int = 0
    proportion_threshold: float = 0.6  # Kaldi default
    # webrtc: 0 (least) .. 3 (most aggressive at calling frames non-speech).  0, because the
    # detector only has to find the digit (recall); the refinement places the edges.  Measured
    # on the padding test modes 0 and 1 are equal, 2 is slightly worse, 3 misses 4-12 % of the
    # digits; on the 3,000 raw FSDD files mode 0/1/2/3 find no speech in 1/3/7/255 of them.
    webrtc_mode: int = 0
    webrtc_frame_ms: int = 10  # finest resolution webrtcvad offers
    margin_s: float = 0.05  # kept on each side by trim_bounds: soft onsets, release tails
    min_speech_s: float = 0.05  # detected spans shorter than this are clicks, not digits
    # --- not in Kaldi ---
    min_run_ms: float = 30.0  # shorter detector runs and refined regions are clicks, not speech
    refine_db: float = 3.0  # edge refinement: dB above the background floor; 0 disables it
    refine_gap_ms: float = 60.0  # quieter gaps up to this long stay inside the speech
    # A refined region counts only if its loudest frame is this far above the background floor.
    # Stationary white noise reaches at most 3.6 dB (10 ms frames at 8 kHz), the flattest real
    # FSDD digit (speech from end to end, no silence at all) 6.1 dB.
    min_snr_db: float = 5.0
    # A region whose loudest frame is more than this below the loudest region's is not speech:
    # on raw FSDD files these are bumps and clicks 0.2-0.8 s away from the digit, 30-45 dB below
    # it (e.g. 9_lucas_12, 1_lucas_13: kept span 1.11 -> 0.53 s, 0.93 -> 0.50 s).  Digits of a
    # string are within ~15 dB of each other.  Costs <= 0.6 points on the padding test.
    drop_below_peak_db: float = 30.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        check_field_types(self)  # every number a finite number of its field's type
        for name in ("frame_length_ms", "frame_shift_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a number > 0, got {getattr(self, name)!r}")
        if self.energy_mean_scale < 0:
            raise ValueError(f"energy_mean_scale must be >= 0 (Kaldi asserts it), got {self.energy_mean_scale}")
        if not _is_int(self.frames_context) or self.frames_context < 0:
            raise ValueError(f"frames_context must be an integer >= 0, got {self.frames_context!r}")
        if not 0.0 < self.proportion_threshold < 1.0:
            raise ValueError(f"proportion_threshold must be in (0, 1) as in Kaldi, got {self.proportion_threshold}")
        if not _is_int(self.webrtc_mode) or self.webrtc_mode not in (0, 1, 2, 3):
            raise ValueError(f"webrtc_mode must be 0, 1, 2 or 3, got {self.webrtc_mode!r}")
        if not _is_int(self.webrtc_frame_ms) or self.webrtc_frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtc_frame_ms must be 10, 20 or 30 (webrtcvad's only frame sizes), "
                             f"got {self.webrtc_frame_ms!r}")
        for name in ("margin_s", "min_speech_s", "min_run_ms", "refine_db", "refine_gap_ms", "min_snr_db",
                     "drop_below_peak_db"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def window_size(self, sample_rate: int) -> int:
        """Samples per energy frame; Kaldi truncates ``sr * ms / 1000`` with int()."""
        return int(sample_rate * 0.001 * self.frame_length_ms)

    def window_shift(self, sample_rate: int) -> int:
        return int(sample_rate * 0.001 * self.frame_shift_ms)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_input(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape}")
    if not _is_int(sample_rate) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return wave


def _frames(wave: np.ndarray, size: int, shift: int) -> np.ndarray:
    """``[num_frames, size]`` float64 view, Kaldi ``snip_edges=True`` framing."""
    x = np.asarray(wave, dtype=np.float64)
    return np.lib.stride_tricks.sliding_window_view(x, size)[::shift]


def _dc_removed_energy(frames: np.ndarray) -> np.ndarray:
    frames = frames - frames.mean(axis=1, keepdims=True)
    return np.einsum("ij,ij->i", frames, frames)


def frame_log_energy(wave: np.ndarray, sample_rate: int, cfg: VadConfig) -> np.ndarray:
    """Kaldi raw log-energy per frame: ``log(max(sum((x - mean(x))^2), FLT_EPS))``, float32.

    Framing as Kaldi with ``snip_edges=True``: ``1 + (N - window) // shift`` frames, frame t at
    ``t * shift``; no dither, so the result is deterministic and digital silence sits at exactly
    ``log(FLT_EPS)``.  Fewer samples than one window give zero frames.
    """
    wave = _check_input(wave, sample_rate)
    size, shift = cfg.window_size(sample_rate), cfg.window_shift(sample_rate)
    if size < 2 or shift < 1:
        raise ValueError(f"frame length/shift too short for {sample_rate} Hz: window={size}, shift={shift} samples")
    if len(wave) < size:
        return np.zeros(0, np.float32)
    energy = _dc_removed_energy(_frames(wave, size, shift))
    return np.log(np.maximum(energy, FLT_EPS)).astype(np.float32)


def energy_vad(log_energy: np.ndarray, cfg: VadConfig) -> np.ndarray:
    """Kaldi ``ComputeVadEnergy``: frame t is voiced if enough frames around it are loud.

    threshold = energy_threshold + energy_mean_scale * mean(log_energy); frame t is voiced iff
    ``#{t2 in [t-c, t+c] ∩ [0, T) : e[t2] > threshold} >= proportion * |[t-c, t+c] ∩ [0, T)|``.
    The threshold and the proportion product are computed in float32 like Kaldi's ``BaseFloat``
    (the sum accumulated in double as ``VectorBase::Sum``), so decisions match Kaldi also on ties.
    """
    e = np.asarray(log_energy, dtype=np.float32)
    if e.ndim != 1:
        raise ValueError(f"log_energy must be 1-D, got shape {e.shape}")
    T = e.shape[0]
    if T == 0:
        return np.zeros(0, bool)
    f32 = np.float32
    thr = f32(cfg.energy_threshold)
    if cfg.energy_mean_scale != 0.0:
        # Kaldi: energy_threshold += vad_energy_mean_scale * log_energy.Sum() / T;
        thr = f32(thr + f32(f32(cfg.energy_mean_scale) * f32(np.sum(e, dtype=np.float64))) / f32(T))
    loud = np.concatenate(([0], np.cumsum(e > thr)))
    t = np.arange(T)
    lo = np.maximum(t - cfg.frames_context, 0)
    hi = np.minimum(t + cfg.frames_context, T - 1)
    num = (loud[hi + 1] - loud[lo]).astype(np.float32)
    den = (hi - lo + 1).astype(np.float32)
    return num >= den * f32(cfg.proportion_threshold)


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
    """WebRTC decision per consecutive ``webrtc_frame_ms`` frame: (voiced, hop in seconds).

    Frame i covers ``[i * hop, (i + 1) * hop)`` seconds of ``wave``; a trailing partial frame is
    dropped.  The VAD is primed on the time-reversed first 300 ms (see ``_WEBRTC_PRIME_S``).
    """
    import webrtcvad

    wave = _check_input(wave, sample_rate)
    x, rate = _webrtc_input(wave, sample_rate)
    n = rate * cfg.webrtc_frame_ms // 1000
    hop = cfg.webrtc_frame_ms / 1000.0
    num = len(x) // n
    if num == 0:
        return np.zeros(0, bool), hop
    vad = webrtcvad.Vad(cfg.webrtc_mode)
    step = 2 * n  # bytes per frame
    k = min(num, int(round(_WEBRTC_PRIME_S / hop)))
    prime = x[: k * n][::-1].tobytes()
    for i in range(k):
        vad.is_speech(prime[i * step : (i + 1) * step], rate)
    buf = x[: num * n].tobytes()
    voiced = np.fromiter((vad.is_speech(buf[i * step : (i + 1) * step], rate) for i in range(num)),
                         dtype=bool, count=num)
    return voiced, hop


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and (exclusive) end indices of the runs of True."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def _detected_runs(wave: np.ndarray, sample_rate: int, cfg: VadConfig) -> tuple[np.ndarray, np.ndarray]:
    """The detector's voiced runs of >= ``min_run_ms`` as two ``[k, 2]`` sample-span arrays.

    ``covered``: the samples the run's frames cover (what refined regions must overlap; WebRTC's
    hangover is kept there on purpose, it bridges into a weak final consonant).  ``edges``: the
    speech edges estimated from the frames alone (used when ``refine_db == 0``).
    """
    if cfg.backend == "energy":
        voiced = energy_vad(frame_log_energy(wave, sample_rate, cfg), cfg)
        size, shift, frame_ms = cfg.window_size(sample_rate), cfg.window_shift(sample_rate), cfg.frame_shift_ms
        onset, offset = _ENERGY_ONSET * size, _ENERGY_OFFSET * size
    else:
        voiced, hop = webrtc_vad(wave, sample_rate, cfg)
        size = shift = hop * sample_rate  # float: exact also after resampling
        frame_ms = cfg.webrtc_frame_ms
        onset = 0.0
        offset = size - _WEBRTC_END_LAG_MS[cfg.webrtc_mode][frame_ms] * 0.001 * sample_rate
    st, en = _runs(voiced)
    keep = en - st >= max(1, math.ceil(cfg.min_run_ms / frame_ms - 1e-9))
    st, en = st[keep], en[keep]

    def spans(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        iv = np.clip(np.rint(np.stack([a, b], axis=1)).astype(np.int64), 0, len(wave))
        return iv[iv[:, 1] > iv[:, 0]]

    first, last = st * shift, (en - 1) * shift
    return spans(first, last + size), spans(first + onset, last + offset)


def refine_track(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int, int]:
    """10*log10 DC-removed energy of 4-block (~10 ms) windows every block (~2.5 ms).

    Window sums are built from per-block sums of x and x^2, so the cost is O(N), not O(N * W):
    this track is most of ``speech_bounds``' time.  ``sum((x - mean)^2) = sum(x^2) - sum(x)^2 / W``
    cancels only within one window, so digital silence stays exactly 0.
    """
    shift = max(1, int(sample_rate * 0.001 * _REFINE_SHIFT_MS))
    size = _REFINE_BLOCKS * shift
    nblocks = len(wave) // shift
    if nblocks < _REFINE_BLOCKS:
        return np.zeros(0), size, shift
    blocks = np.asarray(wave[: nblocks * shift], dtype=np.float64).reshape(nblocks, shift)
    s1 = np.convolve(blocks.sum(axis=1), np.ones(_REFINE_BLOCKS), mode="valid")
    s2 = np.convolve(np.einsum("ij,ij->i", blocks, blocks), np.ones(_REFINE_BLOCKS), mode="valid")
    energy = s2 - s1 * s1 / size
    return 10.0 * np.log10(np.maximum(energy, FLT_EPS)), size, shift


def speech_bounds(wave: np.ndarray, sample_rate: int, cfg: VadConfig = VadConfig()) -> tuple[int, int] | None:
    """Detected speech ``[start, end)`` in samples of ``wave``, or None when there is none.

    ``start`` is the first sample of the first speech region, ``end`` one past the last sample
    of the last one (regions: see the module docstring).  None for an empty or too short
    waveform, digital silence, stationary noise (``min_snr_db``) and spans < ``min_speech_s``.
    """
    wave = _check_input(wave, sample_rate)
    n = len(wave)
    if n == 0 or not np.any(wave):
        return None
    if not np.all(np.isfinite(wave)):
        raise ValueError("waveform contains NaN or infinite samples")
    covered, edges = _detected_runs(wave, sample_rate, cfg)
    db, size, shift = refine_track(wave, sample_rate)
    if len(covered) == 0 or len(db) == 0:
        return None
    k = int(_FLOOR_PERCENTILE / 100 * (len(db) - 1))
    floor = np.partition(db, k)[k]  # 10th percentile (lower), the background level
    if cfg.refine_db > 0:
        st, en = _runs(db > floor + cfg.refine_db)
        if len(st) == 0:
            return None
        # bridge gaps of <= refine_gap_ms between regions above the floor
        new = np.concatenate(([True], (st[1:] - en[:-1]) * shift > cfg.refine_gap_ms * 0.001 * sample_rate))
        st, en = st[new], en[np.concatenate((new[1:], [True]))]
        # max over [st_i, st_i+1) is the region's max: frames between regions are below it
        peak = np.maximum.reduceat(db, st)
        ra = st * shift + round(_REFINE_ONSET * size)
        rb = (en - 1) * shift + round(_REFINE_OFFSET * size)
        # keep the regions that overlap a detected speech run
        keep = ((ra[:, None] < covered[None, :, 1]) & (rb[:, None] > covered[None, :, 0])).any(axis=1)
        # ... and last min_run_ms (a click is not speech)
        keep &= (en - st - 1) * shift + size >= cfg.min_run_ms * 0.001 * sample_rate
    else:
        if len(edges) == 0:
            return None
        ra, rb = edges[:, 0], edges[:, 1]
        lo = np.minimum(ra // shift, len(db) - 1)
        hi = np.maximum(lo + 1, np.minimum(len(db), (rb - size) // shift + 1))
        peak = np.array([db[a:b].max() for a, b in zip(lo, hi)])
        keep = np.ones(len(ra), bool)
    # ... and rise min_snr_db above the background (stationary noise does not), and come within
    # drop_below_peak_db of the loudest region (distant bumps and end-of-recording clicks do not)
    keep &= (peak - floor >= cfg.min_snr_db) & (peak >= peak.max() - cfg.drop_below_peak_db)
    if not keep.any():
        return None
    j = np.flatnonzero(keep)
    start, end = int(ra[j[0]]), int(rb[j[-1]])
    start, end = max(0, start), min(n, end)
    if end - start < max(1.0, cfg.min_speech_s * sample_rate):
        return None
    return start, end


def trim_bounds(wave: np.ndarray, sample_rate: int, cfg: VadConfig = VadConfig()) -> tuple[int, int]:
    """Speech bounds widened by ``margin_s`` on each side and clipped to ``[0, len(wave)]``.

    Raises :class:`NoSpeechError` instead of returning an empty span, so a caller cannot write
    a zero-length utterance by accident.
    """
    wave = _check_input(wave, sample_rate)
    if len(wave) == 0:
        raise NoSpeechError("empty waveform")
    if not np.any(wave):
        raise NoSpeechError("all-zero waveform (digital silence)")
    b = speech_bounds(wave, sample_rate, cfg)
    if b is None:
        raise NoSpeechError(f"no speech detected ({cfg.backend} VAD)")
    margin = int(round(cfg.margin_s * sample_rate))
    start, end = max(0, b[0] - margin), min(len(wave), b[1] + margin)
    if end <= start:  # cannot happen: speech_bounds never returns an empty span
        raise NoSpeechError("empty span after trimming")
    return start, end
