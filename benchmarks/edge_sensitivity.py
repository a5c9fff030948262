"""How much a trained run's speech->image depends on where the trim cut each word.

Each test WAV goes through the run's own front end (``outside_voices._front_end``: prepare list,
trim with the run's VAD config, FBank with the shards' config), then its raw FBank is cut by k
frames at each end, or extended by k copies of its first and last frames (a longer silence around
the word, as a looser trim or a quieter room would leave), normalised as the run normalises, and
scored as ``outside_voices.score`` scores (the unimodal z_s written with the prior style, judged by
the image judge). A run that reads the word and not its margins moves little from column to column.

"extended k, word's stats" extends each word the same way but normalises it with the statistics of
the word as trimmed, both outside the model (per-utterance CMVN) and inside it (a run whose speech
encoders normalise their input, ``audio_input_norm: utterance``, takes its mean and variance from
the frames between the added ones): what the added frames cost through the LSTM alone, without
moving every frame's normalisation.

"floor D dB" (``--floors``): each word as trimmed, its FBank raised to no less than D dB below its
own loudest value (librosa's ``power_to_db(top_db=D)``), before the run's normalisation: what a
model trained without the floor makes of margins that are digital silence, lifted at test time.

    PYTHONPATH=. python benchmarks/edge_sensitivity.py RUN SET [SET ...] [--frames 2,5,10] [--floors 50,60]

SET is a directory with a ``list.csv`` (``outside_voices.py make``, ``score_new_voices.sh``'s george
list). One JSON line per set, accuracies in %.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import outside_voices as ov  # noqa: E402


def moved(raw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``raw`` [T, F] cut by ``k`` frames at each end (unchanged if that leaves under 10), and
    extended by ``k`` copies of each end frame."""
    cut = raw[k: len(raw) - k] if len(raw) > 2 * k + 10 else raw
    return cut, np.concatenate([np.repeat(raw[:1], k, 0), raw, np.repeat(raw[-1:], k, 0)])


def extended_with_word_stats(raw: np.ndarray, k: int) -> np.ndarray:
    """``raw`` extended by k copies of each end frame, normalised with the word's own mean and std."""
    ext = moved(raw, k)[1].astype(np.float64)
    return ((ext - raw.mean(0)) / np.maximum(raw.std(0), 1e-3)).astype(np.float32)


def edge_depth_db(raw: list[np.ndarray], frames: int = 3) -> dict:
    """How far under each word's loudest frame its first and last ``frames`` frames lie (each frame's
    mean over the Mel bins, in dB): the median and the deepest tenth over a set."""
    depth = np.concatenate([(lambda e: (e.max() - np.r_[e[:frames], e[-frames:]]))(x.mean(1)) for x in raw])
    to_db = 10 / np.log(10)
    return {"edge depth dB median": round(float(np.median(depth)) * to_db, 1),
            "edge depth dB q90": round(float(np.percentile(depth, 90)) * to_db, 1)}


def main() -> None:
    import torch

    from pvae_model import modules
    from pvae_model.data import normalize_features
    from pvae_model.eval.judge import Judge
    from pvae_model.normalize import floor_fbank
    from pvae_model.run import load_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("sets", type=Path, nargs="+")
    ap.add_argument("--frames", default="2,5,10")
    ap.add_argument("--floors", default="", help="comma-separated dB below each word's peak; none by default")
    ap.add_argument("--checkpoint", default="last")
    a = ap.parse_args()
    torch.set_num_threads(1)
    _, cfg, model, _, _, cmvn = load_run(a.run, a.checkpoint)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    mode = "utterance" if cfg.cmvn == "speaker" else cfg.cmvn  # as read_voices normalises one WAV
    for s in a.sets:
        work = a.run / "edge_sensitivity" / s.name
        ov._front_end(cfg, s, work)
        raw, feats, labels, _ = ov.read_voices(work, cfg, cmvn)

        def accuracy(fs) -> float:
            return round(100 * float((ov._speech_to_image(model, judge, fs) == labels).mean()), 1)

        row = {"run": str(a.run), "set": s.name, "n": len(labels), **edge_depth_db(raw), "as trimmed": accuracy(feats)}
        raw = [floor_fbank(x, cfg.fbank_floor_db) for x in raw]  # a run with a floor reads every column floored
        for k in (int(v) for v in a.frames.split(",")):
            for name, xs in zip(("cut", "extended"), zip(*(moved(x, k) for x in raw))):
                row[f"{name} {k}"] = accuracy([torch.from_numpy(normalize_features(x, mode, cmvn)) for x in xs])
            if mode == "utterance":
                with contextlib.ExitStack() as stack:
                    if cfg.pvae.departures.audio_input_norm == "utterance":
                        stack.enter_context(mock.patch.object(modules, "masked_utterance_norm",
                                                              functools.partial(modules.masked_utterance_norm, edge=k)))
                    row[f"extended {k}, word's stats"] = accuracy(
                        [torch.from_numpy(extended_with_word_stats(x, k)) for x in raw])
        for db in (float(v) for v in a.floors.split(",") if v):
            row[f"floor {db:g} dB"] = accuracy([torch.from_numpy(normalize_features(x, mode, cmvn, db)) for x in raw])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
