"""Voices from outside FSDD: synthetic isolated digits (espeak-ng), and a trained run scored on them.

For testing only: nothing is trained or tuned on these voices (DEVELOPERS.md: train and tune on
FSDD and perturbations of it).  ``make`` speaks every digit with espeak-ng voices (accents x
voice variants x speaking rate/pitch) at espeak's 22.05 kHz, with a list file for
``pvae-data prepare list``; ``score`` runs the voices through the run's own front end (``prepare
list`` -> ``trim`` -> ``fbank`` with the audio shards' FBank config -> the run's CMVN) and reports
how often the unimodal z_s of each spoken digit, decoded with the image style at the prior mean,
is written as the right digit (judged by the image judge), overall and per voice, and how often
the speech judge recognises the utterance itself.  A run trained with ``cmvn: speaker`` gets
per-utterance CMVN here (one WAV carries no speaker statistics), and is scored a second time with
each voice normalised by the statistics of all its own takes (``speech_to_image_voice_cmvn``).

    PYTHONPATH=. python benchmarks/outside_voices.py make exp/voices
    PYTHONPATH=. python benchmarks/outside_voices.py score exp/demo/pvae_fast exp/voices [--via-generate]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc")
VARIANTS = ("m1", "m3", "f1", "f3", "Andy", "Annie")
STYLES = ((150, 40), (120, 60), (185, 30))  # (words per minute, pitch 0-99)


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (accent, variant) in enumerate(zip(ACCENTS * 2, VARIANTS + VARIANTS[::-1])):
        speaker = f"espeak{i:02d}"
        for d, word in enumerate(WORDS):
            for k, (rate, pitch) in enumerate(STYLES):
                path = out / "wav" / f"{speaker}-{d}-{k}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(rate), "-p", str(pitch),
                                    "-w", str(path), word], check=True)
                rows.append({"path": str(path.resolve()), "transcript": word, "speaker": speaker,
                             "split": "test", "id": f"{speaker}-{d}-{k}", "voice": f"{accent}+{variant}"})
    with open(out / "list.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "transcript", "speaker", "split", "id"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in w.fieldnames})
    (out / "voices.json").write_text(json.dumps({r["speaker"]: r["voice"] for r in rows}, indent=1))
    same = same_audio(rows)
    (out / "same_audio.json").write_text(json.dumps(same, indent=1))
    for later, s in same.items():
        print(f"{later}: {s['files']} of its WAVs are byte for byte {s['as']}'s", file=sys.stderr)
    print(f"{len(rows)} utterances, {len(rows) // 30} voices -> {out / 'list.csv'}")


def same_audio(rows: list[dict]) -> dict[str, dict]:
    """Voices that share WAVs, byte for byte, with an earlier voice: {voice: {"as": the earlier
    voice, "files": how many of its WAVs are the same}}. espeak-ng gives some accent+variant pairs
    the same sound for some words or for all (en-us and en-us-nyc, for one)."""
    from pvae_data.io_utils import sha256_file

    by_voice: dict[str, set[tuple[str, str]]] = {}
    for r in rows:
        word_style = r["id"].split("-", 1)[1]
        by_voice.setdefault(r["speaker"], set()).add((word_style, sha256_file(r["path"])))
    same: dict[str, dict] = {}
    earlier: list[str] = []
    for voice, files in by_voice.items():
        counts = {e: len(files & by_voice[e]) for e in earlier}
        best = max(counts, key=counts.get, default=None)
        if best is not None and counts[best]:
            same[voice] = {"as": best, "files": counts[best]}
        earlier.append(voice)
    return same


def _front_end(run_cfg, voices: Path, work: Path) -> list[dict]:
    """prepare list -> trim -> fbank with the shards' FBank config; returns features records."""
    from pvae_data.fbank import FbankConfig
    from pvae_data.shards.schema import load_index
    from pvae_data.stages.fbank import FbankStageConfig, compute_features
    from pvae_data.stages.prepare import PrepareConfig, prepare_corpus
    from pvae_data.stages.trim import trim_manifest
    from pvae_data.io_utils import read_jsonl
    from pvae_data.vad import VadConfig
    from pvae_model.run import load_vad_config

    fcfg = FbankConfig.from_dict(load_index(run_cfg.audio_shards)[1]["features"]["fbank"])
    vad = VadConfig.from_dict(load_vad_config(run_cfg.audio_shards))  # as the run's training data were trimmed
    prepare_corpus(PrepareConfig(corpus="list", source=str(voices / "list.csv")), work / "prepare", progress=False)
    trim_manifest(work / "prepare" / "utterances.jsonl", work / "trim", vad, show_progress=False)
    compute_features(work / "trim" / "segments.jsonl", work / "fbank", FbankStageConfig(fbank=fcfg),
                     show_progress=False, overwrite=True)
    return read_jsonl(work / "fbank" / "features.jsonl")


def _speech_to_image(model, judge, feats: list) -> np.ndarray:
    """Each utterance's unimodal z_s -> a written digit (style at the prior mean), judged."""
    import torch

    from pvae_model.data import pad_audio

    with torch.no_grad():
        x, lengths = pad_audio(feats)
        zs = model.encode_audio(x, lengths)["s"][0]
        zi = torch.zeros(len(feats), model.cfg.z_image)
        return judge.image_predictions(model.decode_image(zs, zi).clamp(0, 1))


def _per_voice(pred: np.ndarray, labels: np.ndarray, speakers: np.ndarray) -> dict:
    return {s: float((pred[speakers == s] == labels[speakers == s]).mean()) for s in sorted(set(speakers))}


def _listed(voices: Path) -> dict:
    """How many utterances the list file gives each voice."""
    counts: dict = {}
    with open(voices / "list.csv", newline="") as f:
        for r in csv.DictReader(f):
            counts[r["speaker"]] = counts.get(r["speaker"], 0) + 1
    return dict(sorted(counts.items()))


def _voice_cmvn(raw: list, speakers: np.ndarray) -> list:
    """Kaldi's ``apply-cmvn --utt2spk`` with each voice's statistics over all of its own takes,
    accumulated in one pass by the shard stage's own per-speaker CMVN."""
    import torch

    from pvae_data.stages.shard import _kaldi_cmvn
    from pvae_model.data import normalize_features

    records = [{"speaker": str(k), "split": "all", "index": i} for i, k in enumerate(speakers)]
    stats = _kaldi_cmvn(records, lambda r: raw[r["index"]], "all", allow_no_cmvn=True)["speakers"]
    return [torch.from_numpy(normalize_features(r, "global", stats[str(k)])) for r, k in zip(raw, speakers)]


def read_voices(work: Path, cfg, cmvn) -> tuple[list, list, np.ndarray, np.ndarray]:
    """The features ``_front_end`` wrote under ``work``, as the run reads one utterance of a new
    voice: (raw FBank, what the encoders read, digit labels, voices).  A run trained with ``cmvn:
    speaker`` gets per-utterance CMVN (one WAV carries no speaker statistics)."""
    import torch

    from pvae_data.io_utils import read_jsonl
    from pvae_data.stages.fbank import load_features
    from pvae_model.data import normalize_features

    recs = read_jsonl(work / "fbank" / "features.jsonl")
    raw = [load_features(work / "fbank", r) for r in recs]
    mode = "utterance" if cfg.cmvn == "speaker" else cfg.cmvn
    feats = [torch.from_numpy(normalize_features(x, mode, cmvn, cfg.fbank_floor_db)) for x in raw]
    return (raw, feats, np.array([WORDS.index(r["transcript"]) for r in recs]),
            np.array([r["speaker"] for r in recs]))


def score(run: Path, voices: Path, checkpoint: str = "last") -> dict:
    import torch

    from pvae_model.data import pad_audio
    from pvae_model.eval.judge import Judge
    from pvae_model.run import load_run

    ck, cfg, model, _, _, cmvn = load_run(run, checkpoint)
    work = run / "outside_voices"
    _front_end(cfg, voices, work)
    raw, feats, labels, speakers = read_voices(work, cfg, cmvn)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    img_pred = _speech_to_image(model, judge, feats)
    with torch.no_grad():
        sp_pred = judge.speech_predictions(*pad_audio(feats))  # the speech judge on the utterance itself
    per = _per_voice(img_pred, labels, speakers)
    listed = _listed(voices)
    out = {"run": str(run), "epoch": ck["epoch"], "n": len(labels), "listed": sum(listed.values()),
           "speech_to_image": float((img_pred == labels).mean()),
           "speech_judge": float((sp_pred == labels).mean()),
           "worst_voice": min(per.values()), "per_voice": per,
           # an utterance the front end rejected (trim found no speech) counts as wrong here
           "rejected": {s: n - int((speakers == s).sum()) for s, n in listed.items()},
           "per_voice_listed": {s: float((img_pred[speakers == s] == labels[speakers == s]).sum()) / n
                                for s, n in listed.items()}}
    if cfg.cmvn == "speaker":  # with enrolment: each voice normalised by the statistics of all its own takes
        voice = _voice_cmvn(raw, speakers)
        img_v = _speech_to_image(model, judge, voice)
        per_v = _per_voice(img_v, labels, speakers)
        out.update(speech_to_image_voice_cmvn=float((img_v == labels).mean()), per_voice_voice_cmvn=per_v)
    (work / "score.json").write_text(json.dumps(out, indent=2))
    return out


def score_generate(run: Path, voices: Path, checkpoint: str = "last") -> dict:
    """The same voices through ``pvae_model.load(run).speech_to_image`` (what ``pvae-model
    generate`` runs on a person's files), each written digit judged by the image judge."""
    import torch

    import pvae_model
    from pvae_model.eval.judge import Judge
    from pvae_model.run import _run_config

    m = pvae_model.load(run, checkpoint)
    saved = _run_config(run)
    judge = Judge.load(saved["audio_shards"], saved["image_shards"])
    rows = list(csv.DictReader(open(voices / "list.csv")))
    images = torch.stack([torch.from_numpy(m.speech_to_image(r["path"]))[None] for r in rows])
    pred = judge.image_predictions(images)
    labels = np.array([WORDS.index(r["transcript"]) for r in rows])
    speakers = np.array([r["speaker"] for r in rows])
    per = {s: float((pred[speakers == s] == labels[speakers == s]).mean()) for s in sorted(set(speakers))}
    return {"run": str(run), "via": "pvae_model.load", "n": len(rows), "speech_to_image": float((pred == labels).mean()),
            "worst_voice": min(per.values()), "per_voice": per}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    s = sub.add_parser("score")
    s.add_argument("run", type=Path)
    s.add_argument("voices", type=Path)
    s.add_argument("--checkpoint", default="last")
    s.add_argument("--via-generate", action="store_true", help="through pvae_model.load (generate's front end)")
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.out)
    else:
        r = (score_generate if a.via_generate else score)(a.run, a.voices, a.checkpoint)
        print(json.dumps({k: v for k, v in r.items() if k != "per_voice"}))
        print(" ".join(f"{k}:{v:.2f}" for k, v in r["per_voice"].items()), file=sys.stderr)


if __name__ == "__main__":
    main()
