"""Where each aligned word starts and ends: the forced aligner's spans refined by the VAD.

Each word's window (its span, plus ``slack_s`` into an adjacent pause) is shown to the VAD between
two copies of the utterance's own background (the quietest stretch outside every word), so the
VAD's floor is the recording's noise, not the neighbouring word.  ``cfg`` is a
:class:`pvae_data.stages.segment.SegmentConfig` (``vad``, ``slack_s``, ``noise_ref_s``, ``ref_*``,
``junction_search_s``).  Pure functions on arrays.
"""

from __future__ import annotations

import numpy as np

from .vad import NoSpeechError, trim_bounds


def _quietest(wave: np.ndarray, rate: int, n: int) -> tuple[np.ndarray, float]:
    """The quietest ``n`` samples of ``wave`` (10 ms hops) and their mean energy."""
    if len(wave) <= n:
        return wave.copy(), float(np.mean(wave * wave)) if len(wave) else float("inf")
    c = np.concatenate([[0.0], np.cumsum(wave * wave)])
    hop = max(1, rate // 100)
    e = c[n::hop] - c[:len(c) - n:hop]  # energy of [i, i + n) for i = 0, hop, 2 hop, ...
    i = int(np.argmin(e)) * hop
    return wave[i:i + n], float(e.min()) / n


def background_reference(wave: np.ndarray, rate: int, spans: list[tuple[float, float]],
                         cfg) -> np.ndarray | None:
    """The utterance's background, for the VAD: the quietest ``noise_ref_s`` outside every word.

    Only the stretches the aligner (or a CTM) left between, before and after the words count,
    each shrunk by ``ref_guard_s`` next to a word (the aligner's word edges lie on the silence
    side, so these stretches hold no speech); a stretch shorter than ``noise_ref_s`` is tiled to
    that length.  None when no stretch of ``ref_min_s`` remains (a recording cut tight around
    abutting words has no background) or when the stretch is less than ``ref_min_snr_db`` below
    the words' level (it is speech, not background): the VAD then has no valid floor.
    Taking the floor from the whole utterance instead chose speech in recordings without
    background, and the VAD then cut into the words (docs/alignment.md).
    """
    n = max(1, int(round(cfg.noise_ref_s * rate)))
    guard = int(round(cfg.ref_guard_s * rate))
    edges = [(int(round(a * rate)), int(round(b * rate))) for a, b in spans]
    gaps = [(0, edges[0][0] - guard)] if edges else [(0, len(wave))]
    gaps += [(edges[k][1] + guard, edges[k + 1][0] - guard) for k in range(len(edges) - 1)]
    if edges:
        gaps.append((edges[-1][1] + guard, len(wave)))
    best, best_e = None, float("inf")
    for a, b in gaps:
        a, b = max(a, 0), min(b, len(wave))
        if b - a < max(1, cfg.ref_min_s * rate):
            continue
        ref, e = _quietest(wave[a:b], rate, min(n, b - a))
        if e < best_e:
            best, best_e = ref, e
    if best is None:
        return None
    speech = np.concatenate([wave[a:b] for a, b in edges]) if edges else wave
    if len(speech) == 0 or 10 * np.log10(np.mean(speech * speech) + 1e-10) - 10 * np.log10(best_e + 1e-10) \
            < cfg.ref_min_snr_db:
        return None
    return np.resize(best, n) if len(best) < n else best


def refine_junctions(wave: np.ndarray, rate: int, spans: list[tuple[float, float]],
                     search_s: float) -> list[tuple[float, float]]:
    """Spans whose shared edges (abutting words) sit at the quietest 10 ms window within
    ``search_s`` of the aligner's edge, never past either word's middle."""
    if search_s <= 0 or len(spans) < 2:
        return list(spans)
    from .vad import refine_track

    out = [list(s) for s in spans]
    for k in range(len(spans) - 1):
        t = spans[k][1]
        if abs(spans[k + 1][0] - t) > 1e-6:
            continue  # a pause: the VAD places these edges
        lo = max(t - search_s, (spans[k][0] + t) / 2)
        hi = min(t + search_s, (t + spans[k + 1][1]) / 2)
        a, b = int(round(lo * rate)), int(round(hi * rate))
        db, size, shift = refine_track(wave[a:b], rate)
        if len(db) == 0:
            continue
        j = int(np.argmin(db))
        new_t = (a + j * shift + size / 2) / rate  # centre of the quietest window
        out[k][1] = out[k + 1][0] = round(new_t, 6)
    return [(a, b) for a, b in out]


def _claim_loud_edges(wave: np.ndarray, spans: list[tuple[int, int]], snr_db: float) -> list[tuple[int, int]]:
    """With no background: the stretch before the first word (after the last) that the aligner
    called silence but is as loud as speech (within ``snr_db`` of the words) is the word's weak
    onset (offset), e.g. the /s/ of "six": the word keeps it."""
    if not spans:
        return spans
    speech = np.concatenate([wave[a:b] for a, b in spans])
    level = 10 * np.log10(np.mean(speech * speech) + 1e-10)
    out = list(spans)
    a0, b0 = out[0]
    if a0 > 0 and level - 10 * np.log10(np.mean(wave[:a0] ** 2) + 1e-10) < snr_db:
        out[0] = (0, b0)
    a1, b1 = out[-1]
    if b1 < len(wave) and level - 10 * np.log10(np.mean(wave[b1:] ** 2) + 1e-10) < snr_db:
        out[-1] = (a1, len(wave))
    return out


def trim_words(wave: np.ndarray, rate: int, spans: list[tuple[float, float]], cfg) -> list[tuple[int, int] | None]:
    """VAD-trimmed ``[start, end)`` samples of every word span (None: no speech in it).

    Without a valid background (:func:`background_reference`) the spans are kept as they are:
    a VAD with speech for its floor moves edges into the words."""
    if cfg.noise_ref_s > 0:
        ref = background_reference(wave, rate, spans, cfg)
        if ref is None:
            out = [(max(0, int(round(a * rate))), min(len(wave), int(round(b * rate)))) for a, b in spans]
            return _claim_loud_edges(wave, out, cfg.ref_min_snr_db)
    else:
        ref = np.zeros(0)
    n = len(spans)
    out: list[tuple[int, int] | None] = []
    slack = int(round(cfg.slack_s * rate))
    for k, (a, b) in enumerate(spans):
        A, B = int(round(a * rate)), int(round(b * rate))
        pause_before = k == 0 or a - spans[k - 1][1] > 1e-6
        pause_after = k == n - 1 or spans[k + 1][0] - b > 1e-6
        lo = A - slack if pause_before else A
        hi = B + slack if pause_after else B
        if k > 0:
            lo = max(lo, int(round((spans[k - 1][1] + a) / 2 * rate)))
        if k < n - 1:
            hi = min(hi, int(round((b + spans[k + 1][0]) / 2 * rate)))
        lo, hi = max(lo, 0), min(hi, len(wave))
        if hi - lo <= 0:
            out.append(None)
            continue
        x = np.concatenate([ref, wave[lo:hi], ref])
        try:
            s, e = trim_bounds(x, rate, cfg.vad)
        except (NoSpeechError, ValueError):
            out.append(None)
            continue
        s, e = min(max(s - len(ref), 0), hi - lo), max(min(e - len(ref), hi - lo), 0)
        out.append((lo + s, lo + e) if e > s else None)
    return out
