"""Test-time warp of the Mel axis (VTLN at test time), an experiment, not a feature: each spoken
digit's features warped by factors 0.8-1.2 (the training warp, pvae_model.augment.mel_warp), its
z_s decoded as a written digit (prior style) and judged.  Per factor; the factor picked per
utterance, or per voice (mean over its takes), whose z_s lies nearest a training digit's mean
speech z_s (no test labels); and the mean z_s over all factors.  On george's 500 takes (held out
of make demo and of the george fold) and the espeak-ng voices (benchmarks/outside_voices.py make
exp/voices).

    PYTHONPATH=. python benchmarks/warp_at_test_time.py RUN
"""
import csv, sys
import numpy as np, torch
torch.set_num_threads(1)
import pvae_model
from pvae_data.audio import load_audio
from pvae_data.fbank import FbankConfig
from pvae_model.augment import mel_warp
from pvae_model.data import load_audio_split, pad_audio
from pvae_model.eval.judge import Judge
from pvae_model.run import _run_config
run = sys.argv[1]
m = pvae_model.load(run); saved = _run_config(run)
judge = Judge.load(saved["audio_shards"], saved["image_shards"])
fb = FbankConfig.from_dict(m.frontend.fbank)
tr = load_audio_split(saved["audio_shards"], "train", mode="utterance")
ytr = np.asarray(tr.labels)
with torch.no_grad():
    Z = torch.cat([m.model.encode_audio(*pad_audio(tr.feats[b:b+256]))["s"][0] for b in range(0, len(ytr), 256)])
C = torch.stack([Z[torch.from_numpy(ytr == k)].mean(0) for k in range(10)])
WORDS = ("zero","one","two","three","four","five","six","seven","eight","nine")
FSDD = "../shared/data/fsdd/recordings"
items = [(f"{FSDD}/{d}_george_{t}.wav", d, "george") for d in range(10) for t in range(50)]
items += [(r["path"], WORDS.index(r["transcript"]), r["speaker"]) for r in csv.DictReader(open("exp/voices/list.csv"))]
warps = [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2]
P, D, lab, grp, PM, SPK = [], [], [], [], [], []
with torch.no_grad():
    for path, d, g in items:
        wave, sr = load_audio(path)
        x = m.frontend.features(wave / 32768.0 if wave.dtype.kind == "i" else wave, sr)
        X = mel_warp(x[None].expand(len(warps), -1, -1).contiguous(), torch.tensor(warps), fb)
        zs = m.model.encode_audio(X, torch.full((len(warps),), len(x)))["s"][0]
        dist = torch.cdist(zs, C).min(1).values
        p = judge.image_predictions(m.model.decode_image(zs, torch.zeros(len(zs), m.model.cfg.z_image)).clamp(0, 1))
        zm = zs.mean(0, keepdim=True)
        pm = judge.image_predictions(m.model.decode_image(zm, torch.zeros(1, m.model.cfg.z_image)).clamp(0, 1))[0]
        P.append(p); D.append(dist.numpy()); lab.append(d); grp.append("george" if g == "george" else "espeak"); PM.append(pm); SPK.append(g)
P, D, lab, grp, PM, SPK = np.array(P), np.array(D), np.array(lab), np.array(grp), np.array(PM), np.array(SPK)
ok = P == lab[:, None]
for g in ("george", "espeak"):
    k = grp == g
    per_warp = {w: round(100 * ok[k, i].mean(), 1) for i, w in enumerate(warps)}
    sel_utt = ok[k][np.arange(k.sum()), D[k].argmin(1)].mean()
    best_voice = warps[int(D[k].mean(0).argmin())]
    pv = []
    for v in sorted(set(SPK[k])):
        kv = SPK == v
        i = int(D[kv].mean(0).argmin()); pv.extend(ok[kv, i])
    print(g, " ".join(f"{w}:{a}" for w, a in per_warp.items()), f"| utt pick {100*sel_utt:.1f} | voice pick {100*np.mean(pv):.1f} | mean z_s {100*np.mean(PM[k] == lab[k]):.1f}", flush=True)
