"""Which speech style lets a written digit be said?  Image -> speech judged per digit, the same
1,000 written test digits and one length (the training takes' median) for every style: the
prior's mean (the paper's), prior draws, the aggregate posterior's mean (the mean z_a of the
training takes), and each training speaker's voice (pvae_model.voices; * marks the typical one,
the voice ``pvae-model generate`` speaks in).  Also how far the training takes' z_a sit from the
prior's mean.

    PYTHONPATH=. python benchmarks/speech_styles.py RUN [--n 1000] [--checkpoint last]

Prints one line per style: overall accuracy and the ten per-digit accuracies (%).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--checkpoint", default="last")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from pvae_data.perturb import base_speaker
    from pvae_model.data import load_audio_split, pad_audio
    from pvae_model.eval.judge import Judge
    from pvae_model.run import load_run
    from pvae_model.voices import speaker_voices, typical_voice

    _, cfg, model, _, images, _ = load_run(a.run, a.checkpoint)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    train = load_audio_split(cfg.audio_shards, "train", mode=cfg.cmvn)
    voices = speaker_voices(model, train)
    typical = typical_voice(voices)
    rng = np.random.default_rng(0)
    takes = [i for i, s in enumerate(train.speakers) if base_speaker(s) == s]  # no perturbed copies
    with torch.no_grad():
        za = torch.cat([model.encode_audio(*pad_audio([train.feats[i] for i in takes[b:b + 256]]))["a"][0]
                        for b in range(0, len(takes), 256)])
        pick = rng.permutation(len(images.labels))[: a.n]
        y = np.asarray(images.labels)[pick]
        zs = model.encode_image(images.images[pick])["s"][0]
    n, dim = len(y), za.shape[1]
    length = torch.full((n,), int(np.median(train.lengths)))
    print(f"{a.run}: training takes' z_a: mean's distance from the prior's mean {float(za.mean(0).norm()):.2f}, "
          f"mean distance of a take {float(za.norm(dim=1).mean()):.2f} (a prior draw: {np.sqrt(dim - 0.5):.2f})")
    styles = {"prior mean": torch.zeros(n, dim),
              "prior draws": torch.randn(n, dim, generator=torch.Generator().manual_seed(1)),
              "aggregate mean": za.mean(0).expand(n, -1)}
    styles.update({f"voice {k}{' *' if k == typical else ''}": v.expand(n, -1) for k, v in voices.items()})
    print(f"{'style':20s} {'all':>5s}  " + " ".join(f"{d:>4d}" for d in range(10)))
    for name, z in styles.items():
        with torch.no_grad():
            p = judge.speech_predictions(model.decode_audio(zs, z, length), length)
        per = [100 * np.mean(p[y == d] == d) for d in range(10)]
        print(f"{name:20s} {100 * np.mean(p == y):5.1f}  " + " ".join(f"{v:4.0f}" for v in per), flush=True)


if __name__ == "__main__":
    main()
