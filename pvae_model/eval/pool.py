"""Leave-one-speaker-out: the held-out rows of several evaluated folds, one row per fold and pooled.

Each fold is a run trained without one (or more) speakers (``pvae-data prepare --test-speakers``)
and evaluated (``eval/metrics.json``).  Speech-side figures (z_s purity, speech -> image
coherence, own reconstructions, the speech judge on the real utterances) are pooled over the
held-out speakers' utterances; image -> speech, which no speaker owns, is the mean over folds,
beside the fold's judge accuracy on its held-out speaker (the judge's own leave-one-speaker-out
accuracy: an image -> speech figure means only as much as the judge that scores it).  Beside the
paper's prior-style image -> speech, the same in the fold's typical training voice (the style
``generate`` speaks in, :mod:`pvae_model.voices`) where the fold's evaluation has it: a voice the
fold's judge heard in training.
"""

from __future__ import annotations

import json
from pathlib import Path

SPEECH = ("purity", "speech_to_image", "speech_own", "judge")
ADAPTED = ("judge_adapted", "image_to_speech_word", "image_to_speech_voice_word")  # None before the word judge


def fold_names(run_dirs) -> list[str]:
    """A name per fold: the run directory's name, or ``parent/name`` when those repeat
    (``pipelines/loso.sh`` makes ``OUT/<speaker>/pvae`` for every fold)."""
    paths = [Path(r) for r in run_dirs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError("a fold is given twice")
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.name}" for p in paths]


def pool_folds(run_dirs) -> dict:
    folds, total, sums, i2s = {}, 0, {k: 0.0 for k in SPEECH}, []
    for run, name in zip(run_dirs, fold_names(run_dirs)):
        path = Path(run) / "eval" / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no evaluation (run `pvae-model evaluate {run}` first)")
        m = json.loads(path.read_text())
        g = (m.get("speaker_groups") or {}).get("held_out")
        if not g:
            raise ValueError(f"{path}: no held-out speaker (train with `prepare --test-speakers`)")
        row = {"speakers": g["speakers"], "n": g["n"], "epoch": m.get("epoch"),
               **{k: g[k] for k in SPEECH},
               "image_to_speech": m["coherence"]["image_to_speech_prior"],
               "image_to_speech_voice": _voice_figure(m),
               "judge_adapted": g.get("judge_adapted"),
               "image_to_speech_word": (m["coherence"].get("word_judge") or {}).get("image_to_speech_prior"),
               "image_to_speech_voice_word": _voice_figure(m, "image_to_speech_word_judge"),
               "seen_speech_to_image": (m["speaker_groups"].get("seen") or {}).get("speech_to_image")}
        folds[name] = row
        total += g["n"]
        for k in SPEECH:
            sums[k] += g[k] * g["n"]
        i2s.append(row["image_to_speech"])
    if not folds:
        raise ValueError("no fold given")
    voiced = [f["image_to_speech_voice"] for f in folds.values()]
    adapted = {k: [f[k] for f in folds.values()] for k in ADAPTED}
    # the adapted judge on the real takes pools over utterances, like the judge; the rest over folds
    pooled_adapted = {"judge_adapted": None if None in adapted["judge_adapted"] else
                      sum(f["judge_adapted"] * f["n"] for f in folds.values()) / total,
                      **{k: None if None in v else sum(v) / len(v) for k, v in adapted.items() if k != "judge_adapted"}}
    pooled = {**pooled_adapted, "n": total, **{k: sums[k] / total for k in SPEECH}, "image_to_speech": sum(i2s) / len(i2s),
              "image_to_speech_voice": None if None in voiced else sum(voiced) / len(voiced),
              "worst_judge": min(f["judge"] for f in folds.values()),
              "worst_judge_adapted": None if None in adapted["judge_adapted"] else min(adapted["judge_adapted"])}
    return {"folds": folds, "pooled": pooled}


def _voice_figure(m: dict, key: str = "image_to_speech") -> float | None:
    """Image -> speech in the evaluated run's typical voice (None for evaluations before voices)."""
    v = m.get("voices") or {}
    return (v.get(key) or {}).get(v.get("default"))


def _cell(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(p: dict) -> str:
    head = ("| fold | held out | n | epochs | z_s purity | speech→image | own speech | judge | image→speech "
            "| image→speech, typical voice | word judge (adapted) | image→speech, word judge "
            "| typical voice, word judge |")
    lines = [head, "|" + " --- |" * 13]
    cols = (*SPEECH, "image_to_speech", "image_to_speech_voice", *ADAPTED)
    for name, f in p["folds"].items():
        lines.append(f"| {name} | {', '.join(f['speakers'])} | {f['n']} | {f['epoch']} | "
                     + " | ".join(_cell(f.get(k)) for k in cols) + " |")
    q = p["pooled"]
    lines.append(f"| **pooled** | | {q['n']} | | " + " | ".join(f"**{_cell(q.get(k))}**" for k in cols) + " |")
    return "\n".join(lines)
