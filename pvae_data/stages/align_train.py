"""The ``align-train`` stage: train the forced aligner (whole-word HMMs, flat start) on the
transcribed utterances of a manifest -> ``MODEL_DIR/model.{json,npz}`` + ``rejected.jsonl``.

The features and the HMM training are the pure code of :mod:`pvae_data.align`; this module reads
the audio, accounts for every utterance and writes the model.  ``segment`` calls it when it
trains its own aligner.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..align.hmm import save_model
from ..align.train import AlignTrainConfig, TrainUtterance, train_word_hmms
from ..audio import AudioError
from ..perturb import load_perturbed, record_factors
from ..digits import transcript_words
from ..io_utils import read_jsonl, write_jsonl
from ..stage import StageSummary, Timer, map_chunks, progress, single_thread_blas
from ..vad import VadConfig

REJECTED = "rejected.jsonl"


def reject(rec: dict, reason: str) -> dict:
    """An utterance's rejection record (``rejected.jsonl`` of align-train and segment)."""
    return {"id": rec.get("id"), "audio": rec.get("audio"), "transcript": rec.get("transcript"), "reason": reason}


def _train_item(rec: dict, fc_dict: dict) -> tuple[TrainUtterance | None, str | None]:
    from ..align.mfcc import AlignFeatureConfig, align_features
    from ..vad import speech_bounds

    fc = AlignFeatureConfig.from_dict(fc_dict)
    words = transcript_words(rec)
    if not words:
        return None, "empty transcript"
    try:
        _, warp = record_factors(rec)  # a `pvae-data perturb` copy's speed, floor and warp
        wave = load_perturbed(rec, fc.sample_rate)
        x = align_features(wave, fc, warp)
    except AudioError as e:
        return None, e.reason
    except ValueError as e:  # a bad speed / vtln_warp / edge_pad field
        return None, f"bad perturbation: {e}"
    if len(x) == 0:
        return None, "too short for one frame"
    b = speech_bounds(wave.astype(np.float64), fc.sample_rate, VadConfig())
    if b is None:
        return None, "no speech detected (energy VAD)"
    per = fc.sample_rate * fc.shift_s
    return TrainUtterance(x, words, (int(b[0] // per), min(len(x), int(round(b[1] / per))))), None


def _train_many(index: int, records: list[dict], fc_dict: dict) -> list:
    with single_thread_blas():
        return [_train_item(r, fc_dict) for r in records]


def train_aligner(manifest: str | os.PathLike | list[dict], model_dir: str | os.PathLike,
                  cfg: AlignTrainConfig = AlignTrainConfig(), split: str | None = "train", jobs: int = 1,
                  show_progress: bool = True, log=None) -> StageSummary:
    """Train the aligner on the ``split`` utterances of a manifest (all when none has that split).

    Writes ``model.npz``, ``model.json`` and ``rejected.jsonl`` (utterances not used) to ``model_dir``.
    """
    timer = Timer()
    records = read_jsonl(manifest) if not isinstance(manifest, list) else manifest
    name = "the manifest" if isinstance(manifest, list) else str(manifest)
    if split and any(r.get("split") == split for r in records):
        records = [r for r in records if r.get("split") == split]
    if cfg.max_utterances:
        records = records[:cfg.max_utterances]
    if not records:
        raise ValueError(f"{name}: no utterances to train the aligner on")
    fc = cfg.features.to_dict()
    chunks = [records[i:i + 100] for i in range(0, len(records), 100)]
    bar = progress(len(records), "align-train features", show_progress)
    results = []
    for c, res in zip(chunks, map_chunks(_train_many, list(enumerate(chunks)), (fc,), jobs)):
        results.extend(res)
        bar.update(len(c))
    bar.close()
    data = [u for u, _ in results if u is not None]
    rejected = [reject(r, why) for r, (u, why) in zip(records, results) if u is None]
    if not data:
        raise ValueError(f"{name}: none of {len(records)} utterances is usable for training "
                         f"(first reason: {rejected[0]['reason']})")
    with single_thread_blas():
        model = train_word_hmms(data, cfg, log=log)
    out = Path(model_dir)
    save_model(model, out)
    write_jsonl(out / REJECTED, rejected)
    return StageSummary("align-train", total=len(records), kept=len(data), rejected=len(rejected),
                        elapsed_s=timer.elapsed,
                        extra={"words": len(model.words), "hours": model.info["hours"],
                               "loglik/frame": model.info["history"][-1]["loglik_per_frame"]}).check()
