"""How loud a model's generated speech is at its edges, against its middle and against real takes.

For each run: 1,000 written test digits spoken with the prior's style (as ``evaluate``'s
image->speech row: z_s from the image, z_a ~ N(0, I), the length of a random spoken test take),
and the run's real spoken test takes.  Prints the mean level (mean over Mel bins of the features
as the model reads and writes them, normalised per utterance) over the first and last 10 % of each
utterance and over its middle 40-60 %.  Written for "A longer deep floor at the cut edges"
(docs/voices.md): do edge floors in training make the decoders speak quiet edges?

With ``--judge``, also the word judge's verdict (unadapted) on the generated words and on the
run's held-out real takes, whole and with each utterance's frames more than 2 / 1.5 / 1 units under
its loudest cut from its edges. Written for the noise floor's cost on image->speech
(docs/voices.md, "Leave-one-speaker-out"): does the judge misread the generated words' edges?

    PYTHONPATH=. python benchmarks/generated_edges.py [--judge] RUN...
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def levels(utterances) -> tuple[float, float]:
    """(mean level of the first and last 10 % of frames, mean level of the middle 40-60 %)."""
    edge, middle = [], []
    for f in utterances:
        level = np.asarray(f).mean(axis=1)
        T = len(level)
        k = max(1, T // 10)
        edge.append(np.r_[level[:k], level[-k:]].mean())
        middle.append(level[int(0.4 * T):max(int(0.6 * T), int(0.4 * T) + 1)].mean())
    return round(float(np.mean(edge)), 2), round(float(np.mean(middle)), 2)


def cut_quiet_edges(f: np.ndarray, drop: float) -> np.ndarray:
    """The utterance from its first to its last frame whose level (mean over Mel bins) is within
    ``drop`` of its loudest; unchanged when fewer than 8 frames would be left."""
    level = f.mean(axis=1)
    keep = np.flatnonzero(level > level.max() - drop)
    return f[keep[0]: keep[-1] + 1] if len(keep) >= 8 else f


def judged(run: str, cfg, audio, spoken: list, want: np.ndarray) -> None:
    """The word judge's accuracy on the generated words and the held-out real takes, whole and cut."""
    from pvae_model.eval.judge import Judge
    from pvae_model.eval.speakers import seen_in_training, training_speakers

    words = Judge.load(cfg.audio_shards, cfg.image_shards).words
    held = ~seen_in_training(audio.speakers, training_speakers(cfg.audio_shards))
    real = [np.asarray(audio.feats[i]) for i in np.flatnonzero(held)]
    real_y = np.asarray(audio.labels)[held]
    for drop in (None, 2.0, 1.5, 1.0):
        row = []
        for name, utts, y in (("generated", spoken, want), ("held-out real", real, real_y)):
            if len(utts):
                cut = utts if drop is None else [cut_quiet_edges(f, drop) for f in utts]
                row.append(f"{name} {100 * float((words.predict(cut, adapt=False) == y).mean()):.1f}")
        print(f"{run}: word judge, edges cut at {drop or 'none'}: " + ", ".join(row), flush=True)


@torch.no_grad()
def main(runs: list[str], n: int = 1000, seed: int = 1, judge: bool = False) -> None:
    from pvae_model.run import load_run

    torch.set_num_threads(2)
    for run in runs:
        _, cfg, model, audio, images, _ = load_run(run, "last")
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(images.labels))[:n]
        zs = model.encode_image(images.images[pick])["s"][0]
        lengths = torch.tensor([len(f) for f in audio.feats])[rng.integers(0, len(audio.labels), n)]
        za = torch.randn(n, model.cfg.z_audio, generator=torch.Generator().manual_seed(seed + 1))
        x = model.decode_audio(zs, za, lengths)
        spoken = [x[j, : lengths[j]].numpy() for j in range(n)]
        print(f"{run}: generated edge / middle {levels(spoken)}; real test takes {levels(audio.feats)}", flush=True)
        if judge:
            judged(run, cfg, audio, spoken, np.asarray(images.labels)[pick])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main([a for a in sys.argv[1:] if a != "--judge"], judge="--judge" in sys.argv[1:])
