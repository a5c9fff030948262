"""Speed perturbation of waveforms (Ko et al. 2015), as Kaldi's ``perturb_data_dir_speed.sh``.

Kaldi pipes each recording through ``sox speed F``: the signal is played F times faster, so its
duration is divided by F and every frequency multiplied by F (tempo and pitch together).  Here the
same is one resampling: the samples are read as if recorded at ``rate * F`` and resampled to
``rate`` with soxr (quality "HQ", the library's resampler everywhere else too).
"""

from __future__ import annotations

import numpy as np


def check_factor(name: str, factor: float) -> float:
    """A perturbation factor must be in (0, 2]; otherwise a ValueError naming ``name``."""
    f = float(factor)
    if not (0.0 < f <= 2.0) or not np.isfinite(f):
        raise ValueError(f"{name}: perturbation factor must be in (0, 2], got {factor}")
    return f


# A ``perturb`` copy's field from an experiment that was not kept -> what it was and the commit that
# has its code: such a copy is refused by name, never computed as if the field were not there.
RETIRED_FIELDS = {"pitch": ("F0 copies", "012c84f"), "clip_db": ("clipped copies", "f09a36a")}


def record_factors(record: dict) -> tuple[float | None, float]:
    """``(speed or None, vtln_warp)`` of a manifest record (a ``pvae-data perturb`` copy has one of
    them), each checked: a bad value, or a retired field (``RETIRED_FIELDS``), is a ValueError
    naming the field, before any audio is read."""
    for name, (what, commit) in RETIRED_FIELDS.items():
        if name in record:
            raise ValueError(f"{name}: {what} left the library (docs/voices.md; the code: commit {commit})")
    speed = record.get("speed")
    return (None if speed is None else check_factor("speed", speed),
            check_factor("vtln_warp", record.get("vtln_warp", 1.0)))


EDGE_PAD_MAX_S = 1.0  # the longest noise floor a record's ``edge_pad`` may ask for, each side


def record_edge_pad(record: dict) -> tuple[float, float, float] | None:
    """``(left_s, right_s, level_db)`` of a record's ``edge_pad`` (a ``perturb`` copy's noise floor
    around its span), or ``None``; a malformed one is a ValueError naming the field."""
    v = record.get("edge_pad")
    if v is None:
        return None
    try:
        left, right, db = (float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"edge_pad: expected [left_s, right_s, level_db], got {v!r}") from None
    for name, s in (("left_s", left), ("right_s", right)):
        if not (0.0 <= s <= EDGE_PAD_MAX_S):  # also refuses NaN
            raise ValueError(f"edge_pad: {name} must be in [0, {EDGE_PAD_MAX_S:g}] s, got {s}")
    if not (0.0 <= db <= 120.0):
        raise ValueError(f"edge_pad: level_db must be in [0, 120], got {db}")
    return left, right, db


def edge_pad(wave: np.ndarray, rate: int, left_s: float, right_s: float, level_db: float,
             seed: int, source_rate: int | None = None) -> np.ndarray:
    """``wave`` with ``left_s`` / ``right_s`` seconds of white noise before / after it, ``level_db``
    under the wave's mean power: the room a recording keeps around the word when it was not cut
    at the word's edge (seeded, so the same record gets the same floor).  A wave resampled up from
    ``source_rate`` gets a floor within the source's band, as its room would have been recorded."""
    wave = np.asarray(wave, dtype=np.float32)
    power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    sigma = np.sqrt(power * 10.0 ** (-level_db / 10.0))
    band = int(source_rate) if source_rate and 0 < int(source_rate) < rate else rate
    rng = np.random.default_rng(seed)

    def floor(seconds: float) -> np.ndarray:
        n = int(round(seconds * rate))
        noise = (rng.standard_normal(int(round(seconds * band)) + 32) * sigma).astype(np.float32)
        if band != rate:
            import soxr

            noise = soxr.resample(noise, band, rate, quality="HQ")
        return noise[:n] if len(noise) >= n else np.pad(noise, (0, n - len(noise)))

    return np.concatenate([floor(left_s), wave, floor(right_s)]).astype(np.float32)


def speed_perturb(wave: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """``wave`` (1-D, any scale) played ``factor`` times faster, at the same sample rate."""
    f = check_factor("speed", factor)
    if f == 1.0:
        return np.asarray(wave, dtype=np.float32)
    import soxr

    out = soxr.resample(np.asarray(wave, dtype=np.float32), rate * f, rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


# ``pitch``: the copies of the retired ``perturb --pitch`` (RETIRED_FIELDS). Shards made while it existed
# still hold them, and a copy must count as its source speaker (the speaker critic's classes, the
# shards' index), not as a new voice.
_PREFIX = __import__("re").compile(r"^(?:sp|vtlp|pitch)[0-9]+(?:\.[0-9]+)?-")


def base_speaker(speaker: str) -> str:
    """The speaker a perturbed copy's speaker id was made from (``sp0.9-george`` -> ``george``)."""
    s = str(speaker)
    while _PREFIX.match(s):
        s = _PREFIX.sub("", s, count=1)
    return s


def speaker_summary(records) -> dict:
    """What a manifest says about its voices, for the shards' index and a run's metrics:
    ``{"train": [...], "test": [...], "held_out": [...], "perturbed": n}`` (base speakers, sorted;
    ``held_out``: test speakers with no training utterance, ``perturbed``: perturbed copies)."""
    by_split: dict[str, set] = {}
    perturbed = 0
    for r in records:
        by_split.setdefault(r.get("split") or "all", set()).add(base_speaker(r.get("speaker") or ""))
        perturbed += bool(r.get("perturbed_from"))
    train = by_split.get("train", set())
    out = {k: sorted(v) for k, v in sorted(by_split.items())}
    out["held_out"] = sorted(by_split.get("test", set()) - train) if train else []
    out["perturbed"] = perturbed
    return out


def load_perturbed(record: dict, rate: int) -> np.ndarray:
    """A manifest record's span at ``rate`` as a ``perturb`` copy asks for it: sped up by its
    ``speed``, given its ``edge_pad`` floor (its ``vtln_warp`` belongs to the features).  The fields
    are checked before any audio is read: a bad one is a ValueError naming it."""
    import zlib

    from .audio import load_audio

    speed, _ = record_factors(record)
    pad = record_edge_pad(record)
    wave, _ = load_audio(record["audio"], start=record.get("start"), end=record.get("end"), target_rate=rate)
    if speed is not None:
        wave = speed_perturb(wave, rate, speed)
    if pad is not None:
        wave = edge_pad(wave, rate, *pad, seed=zlib.crc32(("edge_pad:" + str(record["id"])).encode()),
                        source_rate=record.get("sample_rate"))
    return wave
