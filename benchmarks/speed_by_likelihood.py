"""Choosing a new voice's speed factor without labels, as VTLN chooses a warp: for each voice (and
each utterance) the factor in 0.8-1.15 whose features the model reconstructs best (mean squared
error of decode_audio(encode_audio(x)), unit variance), then its written digit judged.  An
experiment, not a feature; FSDD paths are this machine's (../shared/data).

    PYTHONPATH=. python benchmarks/speed_by_likelihood.py exp/demo/pvae_fast
"""
import csv
import sys

import numpy as np
import torch

import pvae_model
from pvae_data.audio import load_audio
from pvae_data.perturb import speed_perturb
from pvae_model.eval.judge import Judge
from pvae_model.run import _run_config

torch.set_num_threads(2)
run = sys.argv[1]
m = pvae_model.load(run); saved = _run_config(run)
judge = Judge.load(saved["audio_shards"], saved["image_shards"])
W = ("zero","one","two","three","four","five","six","seven","eight","nine")
FS = str(__import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings")
items = [(f"{FS}/{d}_{s}_{t}.wav", d, s) for s in ("george",) for d in range(10) for t in range(50)]
items += [(f"{FS}/{d}_{s}_{t}.wav", d, s) for s in ("jackson","theo") for d in range(10) for t in range(5)]
items += [(r["path"], W.index(r["transcript"]), r["speaker"]) for r in csv.DictReader(open("exp/voices/list.csv"))]
factors = [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15]
pred = {f: [] for f in factors}; nll = {f: [] for f in factors}; lab = []; spk = []
with torch.no_grad():
    for path, d, s in items:
        wave, sr = load_audio(path)
        for f in factors:
            w = wave if f == 1.0 else speed_perturb(wave, sr, f)
            x = m.frontend.features(w / 32768.0, sr)
            L = torch.tensor([len(x)])
            q = m.model.encode_audio(x[None], L)
            rec = m.model.decode_audio(q["s"][0], q["a"][0], L)
            nll[f].append(float(((rec[0] - x) ** 2).mean()))
            img = m.model.decode_image(q["s"][0], torch.zeros(1, m.model.cfg.z_image)).clamp(0, 1)
            pred[f].append(int(judge.image_predictions(img)[0]))
        lab.append(d); spk.append(s)
lab = np.array(lab); spk = np.array(spk)
P = {f: np.array(v) for f, v in pred.items()}; N = {f: np.array(v) for f, v in nll.items()}
def acc(mask, choice):  # choice: per-item factor
    return float(np.mean([P[c][i] == lab[i] for i, c in zip(np.flatnonzero(mask), choice)]))
for name, mask in (("george", spk == "george"), ("seen", np.isin(spk, ["jackson", "theo"])), ("espeak", np.char.startswith(spk.astype(str), "espeak"))):
    idx = np.flatnonzero(mask)
    base = acc(mask, [1.0] * len(idx))
    # per voice: the factor with the lowest mean reconstruction error over that voice's items
    per_voice = []
    for i in idx:
        vm = (spk == spk[i])
        per_voice.append(min(factors, key=lambda f: N[f][vm].mean()))
    per_utt = [min(factors, key=lambda f: N[f][i]) for i in idx]
    print(name, "1.0:", round(base, 3), "per-voice ML:", round(acc(mask, per_voice), 3), "per-utt ML:", round(acc(mask, per_utt), 3),
          "best fixed:", max((round(acc(mask, [f] * len(idx)), 3), f) for f in factors),
          "chosen:", sorted(set((str(spk[i]), c) for i, c in zip(idx, per_voice)))[:13])
