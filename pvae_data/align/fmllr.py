"""Feature-space MLLR (fMLLR, "constrained MLLR"; Gales 1998, Kaldi's ``gmm-est-fmllr``): one
affine transform ``x -> A x + b`` of a voice's features that makes the whole-word HMMs fit them
best, estimated from the voice's own frames aligned to (hypothesised) transcripts.

Why beside MAP (:mod:`.adapt`): MAP moves each state's mean towards the frames aligned to it, so
a digit misheard on every take of a voice pulls the wrong word's means towards it and the error
stays.  fMLLR moves the voice, not the words: one transform shared by every state, so a spectral
difference between the voice and the training voices is corrected for every digit at once, and the
frames of the misheard digit cannot bend one word's model alone.  Kaldi's speaker-adapted
systems do both, fMLLR then MAP or SAT (``steps/align_fmllr.sh``).

The math, for diagonal-covariance Gaussians (Gales 1998, appendix; Povey & Saon 2006 give the
same row-by-row update): with ``xi = [x; 1]``, state/mixture occupancies ``g``,

    beta = sum g,   K[i] = sum g mu_i / var_i xi,   G[i] = sum g / var_i xi xi^T

and row ``w_i`` of ``W = [A b]`` maximises ``beta log|det A| - 1/2 w_i G[i] w_i^T + w_i K[i]``
given the other rows: ``w_i = (alpha p_i + K[i]) G[i]^-1`` with ``p_i`` the cofactor row of ``A``
(extended by 0) and ``alpha`` the root of ``alpha^2 p G^-1 p + alpha p G^-1 K[i] - beta = 0``
that gives the larger auxiliary value.  Each row update cannot lower the auxiliary function.

Pure functions of arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .hmm import WordHMMs, aligned_posteriors


@dataclass(frozen=True)
class FmllrStats:
    beta: float  # frames counted (silence frames weighted)
    K: np.ndarray  # [D, D + 1]
    G: np.ndarray  # [D, D + 1, D + 1]


def identity_transform(dim: int) -> np.ndarray:
    return np.concatenate([np.eye(dim), np.zeros((dim, 1))], axis=1)


def apply_fmllr(transform: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` [T, D] -> ``A x + b`` for each frame (float32)."""
    d = transform.shape[0]
    return (np.asarray(x, np.float64) @ transform[:, :d].T + transform[:, d]).astype(np.float32)


def fmllr_stats(model: WordHMMs, data: Sequence[tuple[np.ndarray, list[str]]], transform: np.ndarray | None = None,
                silence_weight: float = 0.0) -> FmllrStats:
    """The statistics of one voice from ``data`` (features, transcript words): each utterance
    force-aligned to its words with ``transform`` applied (``None``: as it is), each frame's
    mixture responsibilities in its state.  Silence frames count ``silence_weight`` (Kaldi's
    ``--silence-weight``: a pause says little of the voice).  Utterances no path fits are left out."""
    S, M, D = model.means.shape
    beta, K, G = 0.0, np.zeros((D, D + 1)), np.zeros((D, D + 1, D + 1))
    silence = np.zeros(S, bool)
    silence[model.sil_state_ids()] = True
    for feats, words in data:
        x = np.asarray(feats, np.float64)
        xt = x if transform is None else apply_fmllr(transform, x).astype(np.float64)
        mu_over_var, inv_var = np.zeros((len(x), D)), np.zeros((len(x), D))
        for at, s, r in aligned_posteriors(model, xt, words):
            w = silence_weight if silence[s] else 1.0
            mu_over_var[at] = w * (r @ (model.means[s] / model.variances[s]))
            inv_var[at] = w * (r @ (1.0 / model.variances[s]))
            beta += w * len(at)
        xi = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        K += mu_over_var.T @ xi
        for i in range(D):
            G[i] += (xi * inv_var[:, i:i + 1]).T @ xi
    return FmllrStats(float(beta), K, G)


def fmllr_objective(stats: FmllrStats, transform: np.ndarray) -> float:
    """The auxiliary function per frame (up to a constant): what each row update raises."""
    d = stats.K.shape[0]
    quad = sum(float(transform[i] @ stats.G[i] @ transform[i]) for i in range(d))
    lin = float((transform * stats.K).sum())
    logdet = np.linalg.slogdet(transform[:, :d])[1]
    return (stats.beta * logdet - 0.5 * quad + lin) / max(stats.beta, 1.0)


def estimate_fmllr(stats: FmllrStats, iterations: int = 10, min_frames: float = 0.0) -> np.ndarray:
    """The transform ``[D, D + 1]`` that maximises the auxiliary function, from the identity.
    Fewer than ``min_frames`` frames (or statistics too thin to invert): the identity."""
    d = stats.K.shape[0]
    w = identity_transform(d)
    if stats.beta < max(min_frames, 1.0):
        return w
    try:
        g_inv = np.linalg.inv(stats.G)
    except np.linalg.LinAlgError:
        return identity_transform(d)
    for _ in range(iterations):
        for i in range(d):
            # the cofactor row up to its scale (det A), which the root absorbs
            p = np.append(np.linalg.inv(w[:, :d]).T[i], 0.0)
            e1, e2 = p @ g_inv[i] @ p, p @ g_inv[i] @ stats.K[i]
            root = np.sqrt(e2 * e2 + 4.0 * e1 * stats.beta)
            best = None
            for alpha in ((-e2 + root) / (2.0 * e1), (-e2 - root) / (2.0 * e1)):
                row = (alpha * p + stats.K[i]) @ g_inv[i]
                aux = stats.beta * np.log(abs(row @ p)) - 0.5 * row @ stats.G[i] @ row + row @ stats.K[i]
                if best is None or aux > best[0]:
                    best = (aux, row)
            w[i] = best[1]
    return w if np.isfinite(w).all() else identity_transform(d)
