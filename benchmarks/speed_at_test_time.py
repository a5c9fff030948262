"""Test-time speed perturbation of a new voice: each spoken digit played at several speeds, its
z_s decoded as a written digit (prior style) and judged, per factor, averaged over factors (the
mean z_s) and by majority vote.  On george's 500 takes (held out of make demo) and the espeak-ng
voices (benchmarks/outside_voices.py make exp/voices).  An experiment, not a feature.

    PYTHONPATH=. python benchmarks/speed_at_test_time.py exp/demo/pvae_fast 0.85,0.9,1.0,1.1,1.15
"""
import csv
import sys
from pathlib import Path

import numpy as np
import torch

import pvae_model
from pvae_data.audio import load_audio
from pvae_data.perturb import speed_perturb
from pvae_model.eval.judge import Judge
from pvae_model.run import _run_config

torch.set_num_threads(2)
FSDD = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings")
run = sys.argv[1]
m = pvae_model.load(run)
saved = _run_config(run)
judge = Judge.load(saved["audio_shards"], saved["image_shards"])
WORDS = ("zero","one","two","three","four","five","six","seven","eight","nine")
items = []
for d in range(10):
    for t in range(0, 50, 1):
        items.append((f"{FSDD}/{d}_george_{t}.wav", d, "george"))
for r in csv.DictReader(open(sys.argv[3] if len(sys.argv) > 3 else "exp/voices/list.csv")):
    items.append((r["path"], WORDS.index(r["transcript"]), "espeak"))
factors = [float(x) for x in sys.argv[2].split(",")]
res = {f: [] for f in factors}; avg = []; lab = []; grp = []
with torch.no_grad():
    for path, d, g in items:
        wave, sr = load_audio(path)
        zs = []
        for f in factors:
            w = wave if f == 1.0 else speed_perturb(wave, sr, f)
            x = m.frontend.features(w / 32768.0, sr)
            z = m.model.encode_audio(x[None], torch.tensor([len(x)]))["s"][0]
            zs.append(z)
        Z = torch.cat(zs)
        imgs = m.model.decode_image(torch.cat([Z, Z.mean(0, keepdim=True)]), torch.zeros(len(Z) + 1, m.model.cfg.z_image)).clamp(0, 1)
        p = judge.image_predictions(imgs)
        for f, pi in zip(factors, p[:-1]): res[f].append(pi)
        avg.append(p[-1]); lab.append(d); grp.append(g)
lab = np.array(lab); grp = np.array(grp)
for g in ("george", "espeak"):
    k = grp == g
    print(g, {f: round(float((np.array(v)[k] == lab[k]).mean()), 3) for f, v in res.items()}, "avg", round(float((np.array(avg)[k] == lab[k]).mean()), 3), "vote", end=" ")
    P = np.stack([np.array(v)[k] for v in res.values()])
    vote = [np.bincount(c, minlength=10).argmax() for c in P.T]
    print(round(float((np.array(vote) == lab[k]).mean()), 3))
