"""Latent-space metrics: k-means purity (the paper's Table 1) and inertia curves (Fig. 3)."""

from __future__ import annotations

import numpy as np
import torch


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Sum over clusters of the size of its majority label, divided by N."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    total = 0
    for c in np.unique(clusters):
        total += np.bincount(labels[clusters == c]).max()
    return total / len(labels)


def kmeans_purity(x: np.ndarray, labels: np.ndarray, k: int = 10, seed: int = 0, n_init: int = 10) -> float:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(np.asarray(x, dtype=np.float64))
    return purity(labels, km.labels_)


@torch.no_grad()
def encode_means(model, audio=None, images=None, batch_size: int = 256, device="cpu") -> dict[str, np.ndarray]:
    """Posterior means from the *unimodal* encoders: z_s and z_a from speech, z_s and z_i from images."""
    from .data import pad_audio

    was_training = model.training
    model.eval()
    out: dict[str, list] = {"s_audio": [], "a": [], "s_image": [], "i": []}
    if audio is not None:
        order = np.argsort(audio.lengths, kind="stable")  # little padding, any order gives the same result
        res = [None] * len(order)
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x, lengths = pad_audio([audio.feats[i] for i in idx])
            q = model.encode_audio(x.to(device), lengths.to(device))
            style = q["a"][0] if "a" in q else None
            for j, i in enumerate(idx):
                res[i] = (q["s"][0][j].cpu().numpy(), None if style is None else style[j].cpu().numpy())
        out["s_audio"] = [r[0] for r in res]
        out["a"] = [r[1] for r in res] if res and res[0][1] is not None else []
    if images is not None:
        for b in range(0, len(images.images), batch_size):
            q = model.encode_image(images.images[b:b + batch_size].to(device))
            out["s_image"].append(q["s"][0].cpu().numpy())
            if "i" in q:
                out["i"].append(q["i"][0].cpu().numpy())
        out["s_image"] = list(np.concatenate(out["s_image"])) if out["s_image"] else []
        out["i"] = list(np.concatenate(out["i"])) if out["i"] else []
    model.train(was_training)
    return {k: np.stack(v) for k, v in out.items() if len(v)}


LATENT_NAMES = {"s_audio": "zs_speech", "s_image": "zs_image", "a": "za_speech", "i": "zi_image"}


def load_run(run_dir, checkpoint: str = "last", device: str = "cpu"):
    """(checkpoint dict, TrainConfig, model in eval mode, test AudioSet, test ImageSet, global CMVN)."""
    from pathlib import Path

    from .data import load_audio_split, load_image_split
    from .models.baselines import build_model
    from .train import TrainConfig, _cmvn

    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists():
        path = Path(run_dir) / "checkpoints" / "last.pt"
    ck = torch.load(path, map_location=device, weights_only=False)
    cfg = TrainConfig.from_dict(ck["config"])
    model = build_model(cfg.model, cfg.pvae).to(device)
    model.load_state_dict(ck["model"])
    model.eval()
    cmvn = _cmvn(cfg.audio_shards)
    audio = load_audio_split(cfg.audio_shards, "test", cmvn=cmvn)
    images = load_image_split(cfg.image_shards, "test")
    return ck, cfg, model, audio, images, cmvn


def latent_purity(means: dict, audio_labels, image_labels, seeds: int) -> dict:
    """{"zs_speech": {"mean", "std"}, ...} over ``seeds`` k-means runs, for every latent in ``means``."""
    labels = {"s_audio": audio_labels, "a": audio_labels, "s_image": image_labels, "i": image_labels}
    out = {}
    for key, x in means.items():
        vals = [kmeans_purity(x, labels[key], seed=s) for s in range(seeds)]
        out[LATENT_NAMES[key]] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out


def zs_purity(run_dir, checkpoint: str = "last", seeds: int = 5, device: str = "cpu") -> dict:
    """k-means (k = 10) purity of z_s from the unimodal encoders on the *full* test split.

    Mean and standard deviation over ``seeds`` k-means initialisations; also z_a and z_i (the
    style latents, which should *not* cluster by digit).
    """
    from .models.baselines import MODALITIES

    ck, cfg, model, audio, images, _ = load_run(run_dir, checkpoint, device)
    has = MODALITIES[cfg.model]
    means = encode_means(model, audio if "audio" in has else None, images if "image" in has else None, device=device)
    out = {"model": cfg.model, "checkpoint": checkpoint, "epoch": ck["epoch"],
           "n_speech": len(audio.labels) if "audio" in has else 0,
           "n_images": len(images.labels) if "image" in has else 0}
    out.update(latent_purity(means, audio.labels, images.labels, seeds))
    return out
