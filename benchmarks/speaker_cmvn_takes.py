"""What per-speaker CMVN asks of a new voice: a ``cmvn: speaker`` run scored on a held-out speaker
whose statistics come from k of its own takes.

Kaldi's ``apply-cmvn --utt2spk`` normalises each utterance by its speaker's statistics. In the
shards those are computed over all of the speaker's takes (500 for an FSDD voice); a person who
speaks into the model gives it far fewer. Here the held-out speaker's test takes are cut at random
into groups of k, each group's statistics are computed from that group alone (as if those k takes
were all the voice had given), and each take's unimodal z_s is decoded into a written digit with
the image style at the prior mean and judged by the image judge (the ``speech_to_image`` of
``pvae-model evaluate``). k = 1 is one take normalised by itself, per-utterance CMVN.

    PYTHONPATH=. python benchmarks/speaker_cmvn_takes.py RUN --speaker george [--k 1 3 10 30 500]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outside_voices import _speech_to_image, _voice_cmvn  # noqa: E402


def score_takes(run: Path, speaker: str, ks: list[int], seed: int = 0, checkpoint: str = "last") -> dict:
    from pvae_data.shards.reader import AudioShards
    from pvae_model.eval.judge import Judge
    from pvae_model.run import load_run

    ck, cfg, model, _, _, _ = load_run(run, checkpoint)
    if cfg.cmvn != "speaker":
        raise SystemExit(f"{run}: trained with cmvn: {cfg.cmvn}, not speaker")
    shards = AudioShards(cfg.audio_shards, "test")
    idx = [i for i in range(len(shards)) if shards.speakers[i] == speaker]
    if not idx:
        raise SystemExit(f"{cfg.audio_shards}: no test takes of speaker {speaker!r}")
    raw = [np.asarray(shards[i].feats, np.float32) for i in idx]
    labels = np.asarray(shards.labels)[idx]
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    out = {"run": str(run), "epoch": ck["epoch"], "speaker": speaker, "takes": len(idx)}
    order = np.random.default_rng(seed).permutation(len(idx))
    for k in ks:
        group = np.empty(len(idx), dtype=object)
        group[order] = [f"g{j // k}" for j in range(len(idx))]  # groups of k takes at random
        pred = _speech_to_image(model, judge, _voice_cmvn(raw, group))
        out[f"k{k}"] = round(float((pred == labels).mean()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--speaker", default="george")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 10, 30, 100, 500])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default="last")
    a = ap.parse_args()
    print(json.dumps(score_takes(a.run, a.speaker, a.k, a.seed, a.checkpoint)))


if __name__ == "__main__":
    main()
