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


def record_factors(record: dict) -> tuple[float | None, float]:
    """``(speed or None, vtln_warp)`` of a manifest record (a ``pvae-data perturb`` copy has one of
    them), each checked: a bad value is a ValueError naming the field, before any audio is read."""
    speed = record.get("speed")
    return (None if speed is None else check_factor("speed", speed),
            check_factor("vtln_warp", record.get("vtln_warp", 1.0)))


def speed_perturb(wave: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """``wave`` (1-D, any scale) played ``factor`` times faster, at the same sample rate."""
    f = check_factor("speed", factor)
    if f == 1.0:
        return np.asarray(wave, dtype=np.float32)
    import soxr

    out = soxr.resample(np.asarray(wave, dtype=np.float32), rate * f, rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


_PREFIX = __import__("re").compile(r"^(?:sp|vtlp)[0-9]+(?:\.[0-9]+)?-")


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
