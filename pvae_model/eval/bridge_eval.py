"""``pvae-model evaluate BRIDGE_DIR``: judge a latent-translation bridge both ways, against the
ceiling its base VAEs set, and write its figures and WAVs to ``BRIDGE_DIR/eval/``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..bridge import LoadedBridge
from .plots import pyplot


@torch.no_grad()
def evaluate_bridge(bridge_dir: str | Path, n_images: int = 1000, seed: int = 0, wav_refs: int = 1,
                    vocoder: str = "") -> dict:
    """``BRIDGE_DIR/eval/``: ``metrics.json`` (transfer accuracy both ways judged by the coherence
    classifiers, the base VAEs' own reconstructions judged the same way (the ceiling), per-class
    diversity of the outputs, round-trip error, training cost), an interpolation grid and the WAVs of written -> spoken digits."""
    import soundfile as sf

    from ..run import load_fbank_config

    from .audio_synth import fbank_to_wave
    from ..data import pad_audio
    from .judge import Judge

    t0 = time.perf_counter()
    lb = LoadedBridge(bridge_dir)
    out = lb.dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    audio, images = lb.bases.audio, lb.bases.images
    judge = Judge.load(lb.bases.audio_shards, lb.bases.image_shards)
    rng = np.random.default_rng(seed)
    x_a, lengths = pad_audio(audio.feats)
    gen_img = lb.transfer_speech_to_image(x_a, lengths)
    s2i = judge.images(gen_img, audio.labels)
    pick = rng.permutation(len(images.labels))[:n_images]
    ref = rng.integers(0, len(audio.labels), len(pick))  # each written digit gets a real utterance's length
    lens = lengths[ref]
    gen_sp = lb.transfer_image_to_speech(images.images[pick], lens)
    i2s = judge.utterances(gen_sp, lens, images.labels[pick])
    from ..checkpoints import load_checkpoint

    # The bases' own reconstructions, judged the same way: the ceiling any bridge between them has.
    own_sp = lb.bases.vae_sp.dec(lb.bases.vae_sp.encode_audio(x_a, lengths)["s"][0], lengths)
    own_im = lb.bases.vae_im.dec(lb.bases.vae_im.encode_image(images.images[pick])["s"][0]).clamp(0, 1)
    base_own = {"speech": judge.utterances(own_sp, lengths, audio.labels),
                "image": judge.images(own_im, images.labels[pick])}
    latents = load_checkpoint(lb.dir / "latents.pt")["latents"]["test"]
    z1 = latents["z_speech"]
    rt = lb.model.transfer(z1, 0, 0)
    metrics = {
        "model": "bridge", "epoch": lb.epoch, "purity": {},
        "coherence": {"speech_to_image_prior": s2i, "image_to_speech_prior": i2s,
                      "n_speech_to_image": len(audio.labels), "n_image_to_speech": len(pick), "classifiers": judge.info},
        "base_own_reconstruction": base_own,
        "diversity": _diversity(gen_img, audio.labels, images),
        "round_trip_relative_error": float(((z1 - rt).norm(dim=1) / z1.norm(dim=1).clamp_min(1e-8)).mean()),
        "cost_minutes": {"vae_sp": lb.bases.minutes["speech"], "vae_im": lb.bases.minutes["image"],
                         "bridge": lb.train_minutes},
        "config": lb.cfg.to_dict(),
        "deviations": {**lb.cfg.deviations(),
                       **{f"{base}.{k}": v for base, dev in lb.bases.deviations.items() for k, v in dev.items()}},
        "objective": "bridge",
        "vocoder": vocoder or "griffin-lim",
    }
    _interpolation_grid(lb, latents, out / "bridge_interpolation.png", seed)
    fcfg = load_fbank_config(lb.bases.audio_shards)
    from ..vocoder import speaking_vocoder

    voc = speaking_vocoder(vocoder, fcfg)
    for d in range(10):
        j = int(np.flatnonzero(images.labels[pick] == d)[0]) if (images.labels[pick] == d).any() else None
        if j is None:
            continue
        for r in range(wav_refs):
            wave = fbank_to_wave(gen_sp[j, : lens[j]].numpy(), fcfg, lb.bases.cmvn, vocoder=voc)
            sf.write(out / f"bridge_written_to_spoken_digit{d}_ref{r}.wav", wave, int(fcfg["sample_rate"]))
    from ..provenance import provenance

    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    metrics["provenance"] = provenance({"audio_shards": lb.bases.audio_shards, "image_shards": lb.bases.image_shards})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _diversity(gen: torch.Tensor, labels: np.ndarray, images) -> dict:
    """Per intended class, the mean pairwise distance between generated images over that between
    real test images of the class (~0: one template per class; ~1: as varied as real digits), and
    the fraction of generated images whose nearest generated neighbour is a near-copy."""
    ratios, dup = [], 0
    g = gen.flatten(1)
    for d in range(10):
        w = np.flatnonzero(labels == d)
        if len(w) < 2:
            continue
        real = images.images[np.flatnonzero(images.labels == d)[:200]].flatten(1)
        dist = torch.cdist(g[w], g[w])
        ratios.append(float(dist.sum() / (len(w) * (len(w) - 1))) / float(torch.pdist(real).mean()))
        dist.fill_diagonal_(float("inf"))
        dup += int((dist.min(1).values < 0.5).sum())  # L2 over 784 pixels in [0, 1]
    return {"pairwise_distance_ratio": float(np.mean(ratios)) if ratios else 0.0,
            "near_copy_fraction": dup / max(1, len(labels))}


def _interpolation_grid(lb: LoadedBridge, latents: dict, path: Path, seed: int) -> None:
    """Rows: z' interpolated between two spoken test digits (same digit, then different digits),
    decoded as written digits through the bridge and the VAE-im decoder."""
    plt = pyplot()
    rng = np.random.default_rng(seed)
    y = latents["y_speech"].numpy()
    pairs = []
    for d in (1, 4, 7):
        w = np.flatnonzero(y == d)
        if len(w) >= 2:
            pairs.append(tuple(rng.choice(w, 2, replace=False)))
    for a, b in ((0, 6), (3, 8), (2, 9)):
        wa, wb = np.flatnonzero(y == a), np.flatnonzero(y == b)
        if len(wa) and len(wb):
            pairs.append((rng.choice(wa), rng.choice(wb)))
    if not pairs:
        return
    steps = torch.linspace(0, 1, 8)[:, None]
    fig, axes = plt.subplots(len(pairs), 8, figsize=(8, len(pairs)), squeeze=False)
    for r, (i, j) in enumerate(pairs):
        za = lb.model.encode(latents["z_speech"][[i, j]], 0)[0]
        zb = za[0:1] * (1 - steps) + za[1:2] * steps
        imgs = lb.bases.vae_im.dec(lb.model.decode(zb, 1)).clamp(0, 1)
        for c in range(8):
            axes[r, c].imshow(imgs[c, 0].numpy(), cmap="gray")
            axes[r, c].axis("off")
        axes[r, 0].set_title(f"{y[i]} → {y[j]}", fontsize=7, loc="left")
    fig.suptitle("bridge: z' interpolated between two spoken digits, decoded as written digits", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
