"""Forced alignment of one utterance with its transcript, and the rules that reject it.

:func:`align_words` is a pure function of (model, waveform at the model's rate, words): it
returns word spans in seconds or a rejection reason.  An utterance is rejected, never cut, when

* a word is not in the model's vocabulary;
* the audio is too short for the transcript (fewer frames than the word models' states);
* the per-frame log-likelihood of the forced path is below ``min_score`` (noise, not speech);
* a word is aligned to implausibly few or many frames for that word (transcript/audio mismatch);
* a free recogniser (any words, any order) fits the utterance, or one word's stretch of it,
  ``max_deficit`` / ``max_word_deficit`` nats per frame better than the transcript does (a word
  the recogniser hears as itself is not a mismatch, whatever its deficit);
* the recogniser hears a word where the transcript has silence or a pause, ``max_word_deficit``
  nats per frame better than the forced path's silence there (one digit for two).

Default thresholds are calibrated on the training data and stored in the model
(``model.json`` ``calibration``); :class:`AlignConfig` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigMixin
from .mfcc import align_features
from .hmm import NEG, WordHMMs, forced_align, loop_decode, loop_words, word_spans


@dataclass(frozen=True)
class AlignConfig(ConfigMixin):
    """Decoding and rejection options; ``None`` means the model's calibrated value."""

    lead_sil: bool = True  # optional silence before the first and after the last word
    pauses: bool = True  # optional pause between words
    min_score: float | None = None  # forced path log-likelihood per frame
    max_deficit: float | None = None  # (free recognition - forced) per frame, whole utterance
    max_word_deficit: float | None = None  # the same over one word's frames
    min_word_ratio: float = 0.5  # word frames >= this x the word's 0.5 % training duration
    max_word_ratio: float = 2.0  # word frames <= this x the word's 99.5 % training duration
    check_recognition: bool = True  # run the free recogniser (costs ~ one more Viterbi pass)
    # Memory bound: the forced Viterbi keeps one int32 back-pointer per frame and graph state, so a
    # long recording with a long transcript (20 min, 2,000 words: ~14 GB) is refused up front,
    # with this limit named, rather than allocated.  Split such recordings first (Kaldi segments).
    max_trellis_mb: float = 1024.0


@dataclass
class Alignment:
    words: list[str]
    spans: list[tuple[float, float]] = field(default_factory=list)  # seconds, relative to the waveform
    frames: list[tuple[int, int]] = field(default_factory=list)
    score: float = float("nan")  # forced log-likelihood per frame
    deficit: float = float("nan")  # free - forced per frame
    word_deficits: list[float] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)  # what the free recogniser heard over each word
    # (start frame, end frame, deficit per frame, words heard) of each stretch outside the words
    # in which the free recogniser heard a word
    gap_deficits: list[tuple[int, int, float, str]] = field(default_factory=list)
    recognized: str = ""
    reason: str | None = None  # set => rejected

    @property
    def ok(self) -> bool:
        return self.reason is None


def _threshold(value: float | None, model: WordHMMs, key: str, default: float) -> float:
    if value is not None:
        return float(value)
    return float(model.calibration.get(key, default))


def _path_frame_scores(ll: np.ndarray, state_path: np.ndarray) -> np.ndarray:
    return ll[np.arange(len(state_path)), state_path]


def align_words(model: WordHMMs, wave: np.ndarray, words: list[str], cfg: AlignConfig = AlignConfig(),
                feats: np.ndarray | None = None) -> Alignment:
    """Align ``words`` to ``wave`` (int16 scale, at ``model.features.sample_rate``)."""
    res = Alignment(words=list(words))
    unknown = [w for w in words if w not in model.word_index]
    if unknown:
        res.reason = (f"word {unknown[0]!r} not in the aligner's vocabulary "
                      f"({' '.join(model.words)})")
        return res
    if not words:
        res.reason = "empty transcript"
        return res
    fc = model.features
    g = model.forced_graph(words, lead_sil=cfg.lead_sil, pauses=cfg.pauses)
    T_est = len(feats) if feats is not None else int(len(wave) / (fc.sample_rate * fc.shift_s)) + 1
    need_mb = T_est * len(g["state"]) * 4 / 2**20
    if need_mb > cfg.max_trellis_mb:
        res.reason = (f"too long to align in bounded memory: {T_est} frames x {len(g['state'])} graph states "
                      f"needs {need_mb:.0f} MB > max_trellis_mb {cfg.max_trellis_mb:g} (split the recording first)")
        return res
    x = align_features(wave, fc) if feats is None else feats
    T = len(x)
    need = model.min_frames(words)
    if T < need:
        res.reason = (f"audio too short for its transcript: {T * fc.shift_s:.2f} s holds {T} frames, "
                      f"{len(words)} words need >= {need}")
        return res
    ll = model.loglik(x)
    score, path, g = forced_align(model, ll, words, g)
    if score <= NEG / 2 or path[0] < 0:
        res.reason = f"audio too short for its transcript: no path of {T} frames through {len(words)} words"
        return res
    frames = word_spans(path, g["word_of"], len(words))
    res.frames = frames
    res.spans = [(a * fc.shift_s, b * fc.shift_s) for a, b in frames]
    fscores = _path_frame_scores(ll, g["state"][path])
    res.score = float(fscores.mean())
    min_score = _threshold(cfg.min_score, model, "min_score", -1e9)
    if res.score < min_score:
        res.reason = f"alignment score too low: {res.score:.2f} < {min_score:.2f} per frame (noise or not speech?)"
        return res
    dur = model.calibration.get("durations", {})
    for k, (w, (a, b)) in enumerate(zip(words, frames)):
        lo_hi = dur.get(w)
        n = b - a
        if lo_hi is None:
            continue
        lo, hi = cfg.min_word_ratio * lo_hi[0], cfg.max_word_ratio * lo_hi[1]
        if n < lo or n > hi:
            res.reason = (f"transcript/audio mismatch: word {k + 1} {w!r} aligned to {n * fc.frame_shift_ms:.0f} ms "
                          f"(plausible {lo * fc.frame_shift_ms:.0f}-{hi * fc.frame_shift_ms:.0f} ms)")
            return res
    if cfg.check_recognition:
        _check_recognition(res, model, ll, score, fscores, words, frames, cfg)
    return res


def _check_recognition(res: Alignment, model: WordHMMs, ll: np.ndarray, score: float, fscores: np.ndarray,
                       words: list[str], frames: list[tuple[int, int]], cfg: AlignConfig) -> None:
    """The free recogniser against the transcript (sets ``res.reason`` on a mismatch): over the
    whole utterance, over each word, and over each stretch outside the words where it heard one."""
    fc, T = model.features, len(ll)
    lscore, lpath, lg = loop_decode(model, ll, float(model.calibration.get("loop_entry_lp", -5.0)))
    res.deficit = (lscore - score) / T
    rec = loop_words(lpath, lg)
    res.recognized = " ".join(w for w, _, _ in rec)
    lscores = _path_frame_scores(ll, lg["state"][lpath])
    cf, cl = np.concatenate([[0], np.cumsum(fscores)]), np.concatenate([[0], np.cumsum(lscores)])
    res.word_deficits = [float((cl[b] - cl[a] - cf[b] + cf[a]) / max(1, b - a)) for a, b in frames]
    max_def = _threshold(cfg.max_deficit, model, "max_deficit", 1e9)
    if res.deficit > max_def:
        res.reason = (f"transcript/audio mismatch: free recognition ({res.recognized!r}) fits "
                      f"{res.deficit:.2f} nats/frame better than the transcript (> {max_def:.2f})")
        return
    max_wdef = _threshold(cfg.max_word_deficit, model, "max_word_deficit", 1e9)
    # What the free recogniser heard over each word's frames.  A word heard as itself is not
    # a mismatch whatever its deficit (the free path only placed its edges differently).
    heard = [" ".join(w for w, s, e in rec if min(e, b) - max(s, a) > 0.5 * (e - s)) or "silence"
             for a, b in frames]
    res.heard = heard
    suspect = [k for k in range(len(words)) if heard[k] != words[k]]
    if suspect:
        k = max(suspect, key=lambda i: res.word_deficits[i])
        if res.word_deficits[k] > max_wdef:
            a, b = frames[k]
            res.reason = (f"transcript/audio mismatch: word {k + 1} {words[k]!r} at {a * fc.shift_s:.2f}-"
                          f"{b * fc.shift_s:.2f} s sounds like {heard[k]!r} ({res.word_deficits[k]:.2f} > "
                          f"{max_wdef:.2f} nats/frame)")
            return
    # Speech the transcript does not mention: the forced path can only call it silence or a
    # pause (a two-digit recording labelled with one digit; a dropped word at a pause).  The
    # same per-frame test, over every stretch outside the words where the recogniser heard one.
    edges = [0] + [x for f in frames for x in f] + [T]
    for a, b in zip(edges[0::2], edges[1::2]):
        extra = " ".join(w for w, s, e in rec if min(e, b) - max(s, a) > 0.5 * (e - s))
        if b > a and extra:
            res.gap_deficits.append((a, b, float((cl[b] - cl[a] - cf[b] + cf[a]) / (b - a)), extra))
    if res.gap_deficits:
        a, b, d, extra = max(res.gap_deficits, key=lambda g: g[2])
        if d > max_wdef:
            res.reason = (f"transcript/audio mismatch: {extra!r} heard at {a * fc.shift_s:.2f}-"
                          f"{b * fc.shift_s:.2f} s, outside the transcript's words ({d:.2f} > "
                          f"{max_wdef:.2f} nats/frame)")
            return
