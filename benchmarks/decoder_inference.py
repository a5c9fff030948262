"""Inference by the decoder (analysis by synthesis), an experiment, not a feature: each spoken
digit's z_s refined from the speech encoder's mean towards the mode of
p(x_a | z_s, z_a) p(z_s) p(z_a) (Adam on (z_s, z_a), ``STEPS`` steps), then decoded as a written
digit with the prior style and judged.  Also: ten more starts at each digit's mean image z_s (the
test images'), keeping the start with the best objective, and the digit whose start ends best
(a generative classifier).  No test label is read.  On the test takes of the speakers training
did not see (george's 500 in the george fold) or the espeak-ng voices (``outside_voices.py score
RUN exp/voices`` first: its features).

    PYTHONPATH=. python benchmarks/decoder_inference.py RUN held-out|espeak
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pvae_model.data import pad_audio  # noqa: E402
from pvae_model.eval.judge import Judge  # noqa: E402
from pvae_model.eval.speakers import seen_in_training, training_speakers  # noqa: E402
from pvae_model.run import load_run  # noqa: E402

STEPS, LR = int(os.environ.get("STEPS", "30")), float(os.environ.get("LR", "0.05"))


def voices(run: Path, which: str, cfg, a_te, cmvn):
    """(features, labels) of the speakers training did not see, or of the espeak-ng voices as
    ``outside_voices.py score`` read them."""
    if which == "held-out":
        held = ~seen_in_training(a_te.speakers, training_speakers(cfg.audio_shards))
        return [f for f, h in zip(a_te.feats, held) if h], np.asarray(a_te.labels)[held]
    from outside_voices import read_voices

    _, feats, labels, _ = read_voices(run / "outside_voices", cfg, cmvn)
    return feats, labels


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run, which = Path(sys.argv[1]), sys.argv[2]
    _, cfg, model, a_te, i_te, cmvn = load_run(run, "last")
    for p in model.parameters():
        p.requires_grad_(False)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    feats, labels = voices(run, which, cfg, a_te, cmvn)
    x, lengths = pad_audio(feats)

    def written(zs):
        with torch.no_grad():
            img = model.decode_image(zs, torch.zeros(len(zs), model.cfg.z_image)).clamp(0, 1)
            return judge.image_predictions(img)

    def objective(zs, za):
        nll = model.lik.audio(x, model.decode_audio(zs, za, lengths), lengths)
        return nll + 0.5 * zs.pow(2).sum(-1) + 0.5 * za.pow(2).sum(-1)

    def refine(zs0, za0):
        zs, za = zs0.clone().requires_grad_(True), za0.clone().requires_grad_(True)
        opt = torch.optim.Adam([zs, za], lr=LR)
        for _ in range(STEPS):
            opt.zero_grad()
            objective(zs, za).sum().backward()
            opt.step()
        with torch.no_grad():
            return zs.detach(), objective(zs, za)

    t0 = time.time()
    with torch.no_grad():
        q = model.encode_audio(x, lengths)
        zs_img = model.encode_image(i_te.images)["s"][0]
    protos = torch.stack([zs_img[torch.from_numpy(i_te.labels == d)].mean(0) for d in range(10)])
    mu_s, mu_a = q["s"][0], q["a"][0]
    best_zs, best_obj = refine(mu_s, mu_a)
    refined = written(best_zs)
    ends = []
    for d in range(10):
        zs_d, obj_d = refine(protos[d].expand_as(mu_s), mu_a)
        ends.append(obj_d)
        better = obj_d < best_obj
        best_obj[better], best_zs[better] = obj_d[better], zs_d[better]
    acc = lambda p: float((np.asarray(p) == labels).mean())  # noqa: E731
    print(json.dumps({"run": str(run), "voices": which, "n": len(labels), "steps": STEPS, "lr": LR,
                      "encoder": acc(written(mu_s)), "refined_from_encoder": acc(refined),
                      "best_of_11_starts": acc(written(best_zs)),
                      "generative_classifier": acc(torch.stack(ends, 1).argmin(1).numpy()),
                      "minutes": round((time.time() - t0) / 60, 1)}))


if __name__ == "__main__":
    main()
