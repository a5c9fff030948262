"""The speech judge on voices it has never heard: leave-one-speaker-out over FSDD's six speakers.

For each speaker, a digit classifier is trained on every take of the other five and tested on all
500 takes of the held-out one.  Each variant changes one thing of the front end or the training
(``--variant``; see VARIANTS), so that each speaker-robustness tool is measured alone.  Prints one
row per variant: per-fold accuracy, pooled accuracy, worst fold, minutes.

    PYTHONPATH=. python benchmarks/judge_loso.py --segments exp/demo/trim/segments.jsonl \
        --variant baseline --variant utt_cmvn --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from pvae_data.audio import load_audio
from pvae_data.fbank import FbankConfig, compute_fbank_batch
from pvae_data.perturb import speed_perturb
from pvae_model.augment import SpecAugmentConfig, spec_augment
from pvae_model.eval.classifiers import SpeechDigitClassifier
from pvae_model.normalize import normalize_utterance

FULL = FbankConfig()
BAND = FbankConfig(low_freq=40.0, high_freq=3700.0, vtln_high=3200.0)

# name -> options; every variant not named "baseline" changes what its name says
VARIANTS = {
    "baseline": dict(fbank=FULL, cmvn="global"),
    "utt_cmvn": dict(fbank=FULL, cmvn="utterance"),
    "utt_mean": dict(fbank=FULL, cmvn="utterance_mean"),
    "band": dict(fbank=BAND, cmvn="global"),
    "band_utt": dict(fbank=BAND, cmvn="utterance"),
    "band_utt_specaug": dict(fbank=BAND, cmvn="utterance", specaug=True),
    "band_utt_speed": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1)),
    "band_utt_vtlp": dict(fbank=BAND, cmvn="utterance", warps=(0.9, 0.95, 1.05, 1.1)),
    "band_utt_all": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1), warps=(0.9, 1.1), specaug=True),
    "band_utt_all_wide": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1), warps=(0.9, 1.1), specaug=True,
                              width=256),
    "band_utt_speed_vtlp": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1), warps=(0.9, 1.1)),
    "band_utt_mfcc": dict(fbank=BAND, cmvn="utterance", ceps=20),
    "band_utt_speed_mfcc": dict(fbank=BAND, cmvn="utterance", ceps=20, speeds=(0.9, 1.1)),
    "band_utt_wide": dict(fbank=BAND, cmvn="utterance", speeds=(0.8, 0.9, 1.1, 1.2),
                          warps=(0.85, 0.92, 1.08, 1.15)),
    "band_spk": dict(fbank=BAND, cmvn="speaker"),
    # the same, the held-out speaker's statistics estimated from only k of its utterances
    "band_spk_k": dict(fbank=BAND, cmvn="speaker", ks=(1, 3, 10, 30)),
    "band_spk_speed": dict(fbank=BAND, cmvn="speaker", speeds=(0.9, 1.1)),
    "band_utt_speed_wide": dict(fbank=BAND, cmvn="utterance", speeds=(0.8, 0.9, 1.1, 1.2)),
    "band_utt_speed_vtlp_wide": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1), warps=(0.85, 1.15)),
    # a Mel-axis warp drawn per utterance and per epoch (SpecAugmentConfig.warp_min/max), not copies
    "band_utt_speed_warp": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1), warp=(0.9, 1.3)),
    # the speaker-adapted word judge (pvae_model/eval/word_judge.py): whole-word HMMs, adapted without
    # labels to the held-out voice; "@unadapted" rows: the same before adaptation
    "word_hmm": dict(fbank=BAND, cmvn="utterance", word=True, ks=("unadapted",)),
    "word_hmm_speed": dict(fbank=BAND, cmvn="utterance", word=True, speeds=(0.9, 1.1), ks=("unadapted",)),
    "word_hmm_vtlp": dict(fbank=BAND, cmvn="utterance", word=True, warps=(0.9, 1.1), ks=("unadapted",)),
    # adapted on groups of k takes of the new voice at a time (what a voice must give at once)
    "word_hmm_k": dict(fbank=BAND, cmvn="utterance", word=True, ks=(1, 3, 10, 30, 100)),
    # one change each from the judge: MAP alone (no fMLLR), the aligner's 3 frames per state
    "word_hmm_map": dict(fbank=BAND, cmvn="utterance", word={"fmllr_min_frames": 0}, ks=("unadapted",)),
    "word_hmm_fps3": dict(fbank=BAND, cmvn="utterance", word={"frames_per_state": 3.0}, ks=("unadapted",)),
    "word_hmm_it1": dict(fbank=BAND, cmvn="utterance", word={"adapt_iterations": 1}, ks=("unadapted",)),
    "band_utt_deep": dict(fbank=BAND, cmvn="utterance", arch="deep"),
    "band_utt_all_deep": dict(fbank=BAND, cmvn="utterance", speeds=(0.9, 1.1), warps=(0.9, 1.1), specaug=True,
                              arch="deep"),
}


class DeepSpeechClassifier(torch.nn.Module):
    """Four 1-D convolutions with max-pooling in time (receptive field ~0.3 s), dropout, masked
    mean over time, linear."""

    def __init__(self, feat_dim: int = 80, width: int = 128, dropout: float = 0.2):
        super().__init__()
        nn = torch.nn
        self.conv = nn.ModuleList([nn.Conv1d(feat_dim if i == 0 else width, width, 5, padding=2) for i in range(4)])
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, 10)

    def forward(self, x, lengths):
        h = x.transpose(1, 2)
        lengths = lengths.clone()
        for i, c in enumerate(self.conv):
            h = torch.relu(c(h))
            if i in (1, 2):
                h = torch.nn.functional.max_pool1d(h, 2, ceil_mode=True)
                lengths = (lengths + 1) // 2
        mask = (torch.arange(h.shape[-1])[None, :] < lengths[:, None]).to(h.dtype).unsqueeze(1)
        return self.out(self.drop((h * mask).sum(-1) / lengths[:, None].to(h.dtype)))


def load_waves(segments: str):
    recs = [json.loads(line) for line in open(segments)]
    waves = [load_audio(r["audio"], start=r.get("start"), end=r.get("end"), target_rate=16000)[0] for r in recs]
    labels = np.array([int(r["id"].split("-")[1]) for r in recs])
    speakers = np.array([r["speaker"] for r in recs])
    return waves, labels, speakers


def norm(feats, cmvn: str, mean=None, std=None):
    if cmvn == "global":
        return [torch.from_numpy((f - mean) / std) for f in feats]
    return [torch.from_numpy(normalize_utterance(f, variance=(cmvn == "utterance"))) for f in feats]


def speaker_norm(feats, spk):
    out = [None] * len(feats)
    for s in set(spk):
        idx = [i for i in range(len(feats)) if spk[i] == s]
        cat = np.concatenate([feats[i] for i in idx])
        mean, std = cat.mean(0), cat.std(0) + 1e-5
        for i in idx:
            out[i] = torch.from_numpy((feats[i] - mean) / std)
    return out


def train(feats, labels, epochs, seed, specaug, width, arch="conv2", warp=None, fbank=None):
    from pvae_model.data import pad_audio

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    if arch == "deep":
        clf = DeepSpeechClassifier(feats[0].shape[1], width=width)
    else:  # features arrive normalised as the variant says: the classifier adds nothing
        clf = SpeechDigitClassifier(feats[0].shape[1], width=width, normalize=False)
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    y = torch.from_numpy(labels.astype(np.int64))
    sa = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=5) if specaug else None
    if warp:
        sa = SpecAugmentConfig(**(sa.to_dict() if sa else {}), warp_min=warp[0], warp_max=warp[1])
    for _ in range(epochs):
        clf.train()
        order = rng.permutation(len(y))
        for b in range(0, len(y), 64):
            idx = order[b:b + 64]
            x, lengths = pad_audio([feats[i] for i in idx])
            if sa is not None:
                x = spec_augment(x, lengths, sa, g, fbank)
            loss = torch.nn.functional.cross_entropy(clf(x, lengths), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return clf.eval()


def run_outside(name, waves, labels, speakers, outside, epochs, seed):
    """One judge trained on every take of all six FSDD speakers (the variant's copies too),
    tested on voices from outside FSDD (``outside``: waves, labels, speakers): {voice: accuracy}."""
    from pvae_model.eval.classifiers import predict_speech

    v = VARIANTS[name]
    feats, ys = compute_fbank_batch(waves, v["fbank"]), [labels]
    for f in v.get("speeds", ()):
        feats += compute_fbank_batch([speed_perturb(w, 16000, f) for w in waves], v["fbank"])
        ys.append(labels)
    for w in v.get("warps", ()):
        feats += compute_fbank_batch(waves, replace(v["fbank"], vtln_warp=w))
        ys.append(labels)
    o_waves, o_labels, o_speakers = outside
    o_feats = compute_fbank_batch(o_waves, v["fbank"])
    if v["cmvn"] == "global":
        cat = np.concatenate(feats)
        mean, std = cat.mean(0), cat.std(0) + 1e-5
        f_tr, f_te = norm(feats, "global", mean, std), norm(o_feats, "global", mean, std)
    elif v["cmvn"] == "speaker":
        f_tr = speaker_norm(feats, np.concatenate([speakers] * len(ys)))
        f_te = speaker_norm(o_feats, o_speakers)
    else:
        f_tr, f_te = norm(feats, v["cmvn"]), norm(o_feats, v["cmvn"])
    clf = train(f_tr, np.concatenate(ys), epochs, seed, v.get("specaug", False), v.get("width", 128), v.get("arch", "conv2"),
                v.get("warp"), v["fbank"])
    pred = predict_speech(clf, f_te)
    rows = {spk: float((pred[o_speakers == spk] == o_labels[o_speakers == spk]).mean()) for spk in sorted(set(o_speakers))}
    rows["pooled"] = float((pred == o_labels).mean())
    return rows


def run_variant(name, waves, labels, speakers, epochs, seed, n_train_speakers=0, word_set=None):
    from pvae_model.eval.classifiers import predict_speech

    v = VARIANTS[name]
    base = compute_fbank_batch(waves, v["fbank"])
    extra_f, extra_y, extra_s = [], [], []
    for f in v.get("speeds", ()):
        extra_f += compute_fbank_batch([speed_perturb(w, 16000, f) for w in waves], v["fbank"])
        extra_y.append(labels), extra_s.append(speakers)
    for w in v.get("warps", ()):
        extra_f += compute_fbank_batch(waves, replace(v["fbank"], vtln_warp=w))
        extra_y.append(labels), extra_s.append(speakers)
    if v.get("ceps"):  # MFCC-like: the first ceps DCT-II coefficients of the log-Mel frames
        from pvae_data.align.mfcc import _dct

        dct = _dct(base[0].shape[1], v["ceps"])
        base = [f @ dct for f in base]
        extra_f = [f @ dct for f in extra_f]
    all_f = base + extra_f
    all_y = np.concatenate([labels] + extra_y)
    all_s = np.concatenate([speakers] + extra_s)
    n = len(base)
    rows = {}
    voices = sorted(set(speakers))
    for fold, spk in enumerate(voices):
        others = [v for v in voices if v != spk]
        if n_train_speakers:  # what caps it: only n of the five, rotated so that each voice serves
            others = (others[fold % len(others):] + others[:fold % len(others)])[:n_train_speakers]
        tr = np.flatnonzero(np.isin(all_s, others))
        te = np.flatnonzero(speakers[:n] == spk)
        if v.get("word"):
            from pvae_model.eval.word_judge import WordJudge, WordJudgeConfig

            wcfg = WordJudgeConfig(**{**(v["word"] if isinstance(v["word"], dict) else {}), **(word_set or {})})
            judge = WordJudge.train([all_f[i] for i in tr], all_y[tr], wcfg)
            adapted, first = judge.predict([base[i] for i in te], with_first=True)
            rows[spk] = float((adapted == labels[te]).mean())
            rows[f"{spk}@unadapted"] = float((first == labels[te]).mean())
            for k in (x for x in v.get("ks", ()) if isinstance(x, int)):
                groups = np.random.default_rng(seed).permutation(len(te)) // k
                pred = judge.predict([base[i] for i in te], groups=groups.tolist())
                rows[f"{spk}@{k}"] = float((pred == labels[te]).mean())
            continue
        mean = std = None
        if v["cmvn"] == "global":
            cat = np.concatenate([all_f[i] for i in tr])
            mean, std = cat.mean(0), cat.std(0) + 1e-5
        if v["cmvn"] == "speaker":  # Kaldi's apply-cmvn --utt2spk: each speaker's own stats (the test
            # speaker's over all of its 500 takes: what a new voice must provide first)
            f_tr = speaker_norm([all_f[i] for i in tr], all_s[tr])
            f_te = speaker_norm([base[i] for i in te], speakers[te])
        else:
            f_tr = norm([all_f[i] for i in tr], v["cmvn"], mean, std)
            f_te = norm([base[i] for i in te], v["cmvn"], mean, std)
        clf = train(f_tr, all_y[tr], epochs, seed, v.get("specaug", False), v.get("width", 128),
                    v.get("arch", "conv2"), v.get("warp"), v["fbank"])
        rows[spk] = float((predict_speech(clf, f_te) == labels[te]).mean())
        for k in v.get("ks", ()):  # the new speaker's statistics from k random utterances of its own
            pick = np.random.default_rng(seed).permutation(len(te))[:k]
            cat = np.concatenate([base[te[i]] for i in pick])
            mean, std = cat.mean(0), cat.std(0) + 1e-5
            f_k = [torch.from_numpy((base[i] - mean) / std) for i in te]
            rows[f"{spk}@{k}"] = float((predict_speech(clf, f_k) == labels[te]).mean())
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", default="exp/demo/trim/segments.jsonl")
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--outside", default=None,
                    help="segments.jsonl of voices from outside FSDD (e.g. benchmarks/outside_voices.py make, then "
                         "prepare list + trim): train on all six speakers, test there, instead of LOSO")
    ap.add_argument("--word-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a WordJudgeConfig field for the word_hmm variants, e.g. tau=30 (repeatable)")
    ap.add_argument("--train-speakers", default="0",
                    help="comma list of how many of the other speakers each fold trains on (0 = all five): "
                         "the learning curve over voices")
    args = ap.parse_args()
    word_set = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.word_set)}
    torch.set_num_threads(args.threads)
    waves, labels, speakers = load_waves(args.segments)
    if args.outside:
        outside = load_waves(args.outside)
        for name in args.variant or list(VARIANTS):
            for seed in [int(s) for s in args.seeds.split(",")]:
                t0 = time.time()
                rows = run_outside(name, waves, labels, speakers, outside, args.epochs, seed)
                print(json.dumps({"variant": name, "seed": seed, "outside": {k: round(x, 3) for k, x in rows.items()},
                                  "minutes": round((time.time() - t0) / 60, 2)}), flush=True)
        return
    for name in args.variant or list(VARIANTS):
        for seed, n_spk in [(int(s), int(n)) for s in args.seeds.split(",") for n in args.train_speakers.split(",")]:
            t0 = time.time()
            rows = run_variant(name, waves, labels, speakers, args.epochs, seed, n_spk, word_set)
            acc = np.array([x for k, x in rows.items() if "@" not in k])
            for k in VARIANTS[name].get("ks", ()):
                rows[f"pooled@{k}"] = float(np.mean([x for key, x in rows.items() if key.endswith(f"@{k}")
                                                     and not key.startswith("pooled")]))
            print(json.dumps({"variant": name, "seed": seed, "train_speakers": n_spk or 5, "pooled": round(float(acc.mean()), 4),
                              "worst": round(float(acc.min()), 4), "folds": {k: round(x, 3) for k, x in rows.items()},
                              "minutes": round((time.time() - t0) / 60, 2)}), flush=True)


if __name__ == "__main__":
    main()
