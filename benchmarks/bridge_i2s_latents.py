"""What caps a bridge's image->speech transfer: the translated speech latents, or where they land?

Judges (with the coherence judge) the VAE-sp's decoding of a trained bridge's translated speech
latents for 1,000 test images, as they are and altered five ways: z' sampled instead of its mean;
the bridge's residual noise (per-dimension std of z - decode(encode(z)) on training latents) added,
fully or half; scaled about the training latents' mean to their typical distance; and snapped to
the nearest real training latent. If none of these moves the figure, the translations already
land where the VAE-sp's own latents decode that well: the base, not the bridge, is the limit.

    PYTHONPATH=. python benchmarks/bridge_i2s_latents.py exp/bridge_base/shipped_idle
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from pvae_model.bridge import LoadedBridge
from pvae_model.checkpoints import load_checkpoint
from pvae_model.data import pad_audio
from pvae_model.eval.judge import Judge


@torch.no_grad()
def main(bridge_dir: str) -> None:
    torch.set_num_threads(1)
    lb = LoadedBridge(bridge_dir)
    torch.manual_seed(0)  # after building the bridge (its initialisation draws)
    audio, images = lb.bases.audio, lb.bases.images
    judge = Judge.load(lb.bases.audio_shards, lb.bases.image_shards)
    rng = np.random.default_rng(0)  # the same 1,000 images and reference lengths as `evaluate`
    _, lengths = pad_audio(audio.feats)
    pick = rng.permutation(len(images.labels))[:1000]
    lens = lengths[rng.integers(0, len(audio.labels), len(pick))]
    y = images.labels[pick]
    z_train = load_checkpoint(lb.dir / "latents.pt")["latents"]["train"]["z_speech"]
    m = lb.model
    resid_std = (z_train - m.decode(m.encode(z_train, 0)[0], 0)).std(0)
    mu, logvar = m.encode(lb.bases.vae_im.encode_image(images.images[pick])["s"][0], 1)
    base = m.decode(mu, 0)
    centre = z_train.mean(0)
    scale = (z_train - centre).norm(dim=1).mean() / (base - centre).norm(dim=1).mean()
    variants = {
        "translation (the bridge's mean)": base,
        "z' sampled, not its mean": m.decode(mu + (0.5 * logvar).exp() * torch.randn_like(mu), 0),
        "+ the bridge's residual noise": base + resid_std * torch.randn_like(base),
        "+ half of it": base + 0.5 * resid_std * torch.randn_like(base),
        f"scaled x{scale:.2f} about the mean": centre + (base - centre) * scale,
        "nearest real training latent": z_train[torch.cdist(base, z_train).argmin(1)],
    }
    print(f"real training latents: norm {z_train.norm(dim=1).mean():.2f}; residual std {resid_std.mean():.3f}")
    print(f"{'speech latents decoded':40s} judged correct  norm")
    for name, z in variants.items():
        acc = judge.utterances(lb.bases.vae_sp.dec(z, lens), lens, y)
        print(f"{name:40s} {acc:14.1%}  {z.norm(dim=1).mean():.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "exp/bridge_base/shipped_idle")
