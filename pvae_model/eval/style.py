"""Does a generated digit take the reference's *style*?  A measure independent of the model.

The judge says whether a generation is the intended digit; it cannot say whether the style
latent did anything.  Here three handwriting features that MNIST style varies along, and that
the paper's style-transfer figures show, are computed from pixel moments (pure numpy, no
learned model):

``slant``  the shear of the ink, mu11 / mu02 (the deskewing coefficient of classic MNIST
           preprocessing): > 0 leans right;
``ink``    total ink (sum of pixel values): stroke thickness and size;
``width``  the horizontal spread of the ink, sqrt(mu20).

:func:`style_transfer_r` scores a set of generations against the references whose style they
were given: the Pearson correlation, over items, between the reference's feature and the
generation's, each first centred within its own digit class (the reference's digit differs from
the generation's, and "1" has less ink than "8" whatever the writer).  1 = the style carries
over exactly; 0 = the generation ignores the reference.  For a model's own reconstructions the
same figure is the ceiling the decoder reaches.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("slant", "ink", "width")


def image_style_features(x: np.ndarray) -> dict[str, np.ndarray]:
    """``x``: [N, 28, 28] (or [N, 1, 28, 28]) intensities in [0, 1] -> {feature: [N]}."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1, np.shape(x)[-1])
    x = np.clip(x, 0.0, 1.0)
    n, h, w = x.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    mass = x.sum(axis=(1, 2))
    safe = np.maximum(mass, 1e-8)
    cx = (x * xs).sum(axis=(1, 2)) / safe
    cy = (x * ys).sum(axis=(1, 2)) / safe
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    mu11 = (x * dx * dy).sum(axis=(1, 2)) / safe
    mu02 = (x * dy * dy).sum(axis=(1, 2)) / safe
    mu20 = (x * dx * dx).sum(axis=(1, 2)) / safe
    # image rows grow downwards: a right-leaning stroke has x growing as y shrinks, hence the sign
    slant = -mu11 / np.maximum(mu02, 1e-8)
    return {"slant": slant, "ink": mass, "width": np.sqrt(np.maximum(mu20, 0.0))}


def _centred(v: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = v.astype(np.float64).copy()
    for c in np.unique(labels):
        sel = labels == c
        out[sel] -= out[sel].mean()
    return out


def style_transfer_r(reference: np.ndarray, reference_labels, generated: np.ndarray, generated_labels) -> dict:
    """{feature: Pearson r} between each reference's and its generation's class-centred feature."""
    ref, gen = image_style_features(reference), image_style_features(generated)
    ry, gy = np.asarray(reference_labels), np.asarray(generated_labels)
    if len(ry) != len(gy) or len(ry) != len(ref["ink"]) or len(gy) != len(gen["ink"]):
        raise ValueError("references, generations and their labels must have the same length")
    out = {}
    for f in FEATURES:
        a, b = _centred(ref[f], ry), _centred(gen[f], gy)
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        out[f] = float((a * b).sum() / denom) if denom > 0 else 0.0
    return out
