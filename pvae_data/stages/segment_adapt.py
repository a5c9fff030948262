"""Speaker adaptation inside ``segment``: before segmenting, the aligner is MAP-adapted to each
speaker of the manifest (:func:`pvae_data.align.adapt.map_adapt`) on that speaker's utterances
(``AdaptConfig.data``: every one its transcript's forced path fits, or only those it accepts);
each adapted model is kept in ``OUT/adapted/<speaker>/`` with a marker of what it was made from,
and reused by a rerun."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..align.adapt import AdaptConfig, map_adapt
from ..align.aligner import AlignConfig, align_words
from ..align.hmm import cached_model, model_sha256, save_model
from ..align.mfcc import align_features
from ..audio import AudioError, load_audio
from ..digits import transcript_words
from ..io_utils import write_json
from ..stage import map_chunks, progress, single_thread_blas

ADAPT_SUBDIR = "adapted"  # OUT/adapted/<speaker>/: the aligner adapted to each speaker
ADAPT_MARKER = "adapt_key.json"  # written last: what the adapted model was made from


def _speaker_dir(out: Path, speaker: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in speaker)[:40]
    return out / ADAPT_SUBDIR / f"{safe}-{hashlib.sha256(speaker.encode()).hexdigest()[:8]}"


def _adapt_one(index: int, job: tuple, model_dir: str, align_dict: dict, adapt_dict: dict) -> str:
    """Adapt the aligner to one speaker, write it, return its directory."""
    speaker, records, key, out_dir = job
    align_cfg, adapt_cfg = AlignConfig.from_dict(align_dict), AdaptConfig.from_dict(adapt_dict)
    if adapt_cfg.data == "aligned":  # every transcript the forced path fits: no score or recognition check
        align_cfg = replace(align_cfg, min_score=-1e9, check_recognition=False)
    model = cached_model(model_dir)
    fc = model.features
    data = []
    with single_thread_blas():
        for r in records:
            words = transcript_words(r)
            if not words or any(w not in model.word_index for w in words):
                continue
            try:
                wave, _ = load_audio(r["audio"], start=r.get("start"), end=r.get("end"), target_rate=fc.sample_rate)
            except (AudioError, KeyError, TypeError, ValueError):
                continue  # the segment pass rejects it, with the reason
            feats = align_features(wave.astype(np.float64), fc)
            if align_words(model, wave, words, align_cfg, feats=feats).ok:
                data.append((feats, words))
        adapted = map_adapt(model, data, adapt_cfg)
        adapted = _speaker_min_score(adapted, model, data, adapt_cfg)
    d = Path(out_dir)
    save_model(adapted, d)
    write_json(d / ADAPT_MARKER, key)
    return str(d.resolve())


MIN_UTTERANCES_FOR_SCORE = 5  # a speaker's median score from fewer utterances is not trusted


def _speaker_min_score(adapted, base, data: list, cfg: AdaptConfig):
    """The adapted model with its "noise, not speech" threshold (``min_score``) lowered by how far
    this speaker's median forced score (under the adapted model) lies below the training voices'
    median, by at most ``cfg.score_shift_max`` nats per frame: a voice unlike the training voices
    scores lower on every utterance, speech or not, and noise still scores far below its speech."""
    stats = (base.calibration.get("stats") or {}).get("score_quantiles") or {}
    if not cfg.score_shift_max or len(data) < MIN_UTTERANCES_FOR_SCORE or "min_score" not in base.calibration \
            or "median" not in stats or adapted is base:
        return adapted
    relaxed = AlignConfig(min_score=-1e9, check_recognition=False)
    scores = [align_words(adapted, None, w, relaxed, feats=f).score for f, w in data]
    scores = [x for x in scores if np.isfinite(x)]
    if len(scores) < MIN_UTTERANCES_FOR_SCORE:
        return adapted
    shift = float(np.clip(stats["median"] - np.median(scores), 0.0, cfg.score_shift_max))
    adapted.calibration = {**base.calibration, "min_score": base.calibration["min_score"] - shift}
    adapted.info = {**adapted.info, "speaker_score_shift": round(shift, 3)}
    return adapted


def adapt_speakers(records: list[dict], model_dir: str, out: Path, cfg, jobs: int = 1,
                   show_progress: bool = True) -> dict[str, str]:
    """``{speaker: adapted model directory}`` for every speaker of ``records`` (resumable: a
    speaker whose ``OUT/adapted/<speaker>`` was made from the same model, config and utterances
    is reused).  Depends only on the whole manifest, so every job-array member gets the same."""
    by_speaker: dict[str, list[dict]] = {}
    for r in records:
        if isinstance(r.get("speaker"), str) and r["speaker"]:
            by_speaker.setdefault(r["speaker"], []).append(r)
    base = model_sha256(model_dir)
    done, todo = {}, []
    for spk, recs in sorted(by_speaker.items()):
        key = {"model_sha256": base, "adapt": cfg.adapt.to_dict(), "align": cfg.align.to_dict(),
               "utterances": hashlib.sha256(json.dumps([[r.get("id"), r.get("audio"), r.get("start"), r.get("end"),
                                                         r.get("transcript")] for r in recs]).encode()).hexdigest()}
        d = _speaker_dir(out, spk)
        marker = d / ADAPT_MARKER
        if marker.is_file() and json.loads(marker.read_text()) == key:
            done[spk] = str(d.resolve())
        else:
            todo.append((spk, recs, key, str(d)))
    bar = progress(len(todo), "segment: adapt to speakers", show_progress and bool(todo))
    for (spk, *_), d in zip(todo, map_chunks(_adapt_one, list(enumerate(todo)), (model_dir, cfg.align.to_dict(), cfg.adapt.to_dict()), jobs)):
        done[spk] = d
        bar.update(1)
    bar.close()
    return done
