"""How loud a model's generated speech is at its edges, against its middle and against real takes.

For each run: 1,000 written test digits spoken with the prior's style (as ``evaluate``'s
image->speech row: z_s from the image, z_a ~ N(0, I), the length of a random spoken test take),
and the run's real spoken test takes.  Prints the mean level (mean over Mel bins of the features
as the model reads and writes them, normalised per utterance) over the first and last 10 % of each
utterance and over its middle 40-60 %.  Written for "A longer deep floor at the cut edges"
(docs/voices.md): do edge floors in training make the decoders speak quiet edges?

    PYTHONPATH=. python benchmarks/generated_edges.py RUN...
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


@torch.no_grad()
def main(runs: list[str], n: int = 1000, seed: int = 1) -> None:
    from pvae_model.run import load_run

    torch.set_num_threads(2)
    for run in runs:
        _, _, model, audio, images, _ = load_run(run, "last")
        rng = np.random.default_rng(seed)
        zs = model.encode_image(images.images[rng.permutation(len(images.labels))[:n]])["s"][0]
        lengths = torch.tensor([len(f) for f in audio.feats])[rng.integers(0, len(audio.labels), n)]
        za = torch.randn(n, model.cfg.z_audio, generator=torch.Generator().manual_seed(seed + 1))
        x = model.decode_audio(zs, za, lengths)
        spoken = [x[j, : lengths[j]].numpy() for j in range(n)]
        print(f"{run}: generated edge / middle {levels(spoken)}; real test takes {levels(audio.feats)}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
