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
def encode_posteriors(model, audio=None, images=None, batch_size: int = 256,
                      device="cpu") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Posterior (mean, log-variance) from the *unimodal* encoders, in the items' order:
    ``s_audio`` and ``a`` from speech, ``s_image`` and ``i`` from images (``s_*`` only for the
    baselines' single latent)."""
    from ..data import pad_audio

    was_training = model.training
    model.eval()
    parts: dict[str, list] = {}
    if audio is not None:
        order = np.argsort(audio.lengths, kind="stable")  # little padding, any order gives the same result
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x, lengths = pad_audio([audio.feats[i] for i in idx])
            q = model.encode_audio(x.to(device), lengths.to(device))
            for k, name in (("s", "s_audio"), ("a", "a")):
                if k in q:
                    parts.setdefault(name, []).append((idx, *(t.cpu().numpy() for t in q[k])))
    if images is not None:
        for b in range(0, len(images.images), batch_size):
            idx = np.arange(b, min(b + batch_size, len(images.images)))
            q = model.encode_image(images.images[b:b + batch_size].to(device))
            for k, name in (("s", "s_image"), ("i", "i")):
                if k in q:
                    parts.setdefault(name, []).append((idx, *(t.cpu().numpy() for t in q[k])))
    model.train(was_training)
    out = {}
    for name, chunks in parts.items():
        idx = np.concatenate([c[0] for c in chunks])
        mu, lv = np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks])
        back = np.empty_like(idx)
        back[idx] = np.arange(len(idx))
        out[name] = (mu[back], lv[back])
    return out


def encode_means(model, audio=None, images=None, batch_size: int = 256, device="cpu") -> dict[str, np.ndarray]:
    """Posterior means from the *unimodal* encoders: z_s and z_a from speech, z_s and z_i from images."""
    return {k: mu for k, (mu, _) in encode_posteriors(model, audio, images, batch_size, device).items()}


def rate(mu: np.ndarray, logvar: np.ndarray) -> float:
    """Mean KL(q(z|x) || N(0, I)) in nats: how much a latent says about its input.  A latent that
    k-means finds "pure" while its rate is ~0 holds nothing a decoder can use."""
    return float(np.mean(0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar).sum(-1)))


def sample_probe_accuracy(train: tuple[np.ndarray, np.ndarray], y_train: np.ndarray,
                          test: tuple[np.ndarray, np.ndarray], y_test: np.ndarray, seed: int = 0) -> float:
    """Digit accuracy of a linear probe (multinomial logistic regression on standardised inputs)
    trained on one posterior *sample* per training item and scored on samples of the test items.
    Unlike k-means purity on means, it is blind to scale only as far as the posterior noise
    allows: a latent whose means vary by digit far less than its posterior std scores ~chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    draw = lambda mu, lv: mu + rng.standard_normal(mu.shape) * np.exp(0.5 * lv)  # noqa: E731
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(draw(*train), y_train)
    return float((clf.predict(draw(*test)) == y_test).mean())


LATENT_NAMES = {"s_audio": "zs_speech", "s_image": "zs_image", "a": "za_speech", "i": "zi_image"}


def latent_purity(means: dict, audio_labels, image_labels, seeds: int) -> dict:
    """{"zs_speech": {"mean", "std"}, ...} over ``seeds`` k-means runs, for every latent in ``means``."""
    labels = {"s_audio": audio_labels, "a": audio_labels, "s_image": image_labels, "i": image_labels}
    out = {}
    for key, x in means.items():
        vals = [kmeans_purity(x, labels[key], seed=s) for s in range(seeds)]
        out[LATENT_NAMES[key]] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out


def zs_purity(run_dir, checkpoint: str = "best", seeds: int = 5, device: str = "cpu", **shards) -> dict:
    """k-means (k = 10) purity of z_s from the unimodal encoders on the *full* test split.

    Mean and standard deviation over ``seeds`` k-means initialisations; also z_a and z_i (the
    style latents, which should *not* cluster by digit).
    """
    from ..models import MODALITIES
    from ..run import load_run

    ck, cfg, model, audio, images, _ = load_run(run_dir, checkpoint, device, **shards)
    has = MODALITIES[cfg.model]
    means = encode_means(model, audio if "audio" in has else None, images if "image" in has else None, device=device)
    out = {"model": cfg.model, "checkpoint": checkpoint, "checkpoint_file": ck["loaded_from"], "epoch": ck["epoch"],
           "n_speech": len(audio.labels) if "audio" in has else 0,
           "n_images": len(images.labels) if "image" in has else 0}
    out.update(latent_purity(means, audio.labels, images.labels, seeds))
    return out
