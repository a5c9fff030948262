"""Whole-word HMMs: the model, its emissions, its decoding graphs and its file format.

Every word of the vocabulary is a left-to-right chain of states (self-loop or move on, no
skips); silence is one more chain.  Emissions are diagonal-covariance Gaussian mixtures.  The
math is pure functions of arrays; :func:`save_model` / :func:`load_model` are the only I/O.

State layout: word ``w`` owns states ``offsets[w] .. offsets[w] + n_states[w] - 1``; the silence
chain owns the last ``sil_states`` states.  The optional inter-word pause is one position tied to
the middle silence state (so it can be as short as one frame).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io_utils import atomic_path, write_json
from . import _kernels
from .mfcc import AlignFeatureConfig

MODEL_NPZ = "model.npz"
MODEL_JSON = "model.json"
FORMAT_VERSION = 1
NEG = _kernels.NEG


@dataclass
class WordHMMs:
    """Trained whole-word HMM set (arrays float64 except where noted)."""

    words: list[str]
    n_states: list[int]
    sil_states: int
    means: np.ndarray  # [S, M, D]
    variances: np.ndarray  # [S, M, D]
    log_weights: np.ndarray  # [S, M]
    self_lp: np.ndarray  # [S] log P(stay)
    features: AlignFeatureConfig = field(default_factory=AlignFeatureConfig)
    calibration: dict = field(default_factory=dict)  # thresholds and statistics from training
    info: dict = field(default_factory=dict)  # training record (data size, iterations, time)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.n_states)]).astype(np.int64)
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self._prepare()

    # ------------------------------------------------------------------ layout
    @property
    def num_states(self) -> int:
        return int(self.offsets[-1]) + self.sil_states

    @property
    def sil_offset(self) -> int:
        return int(self.offsets[-1])

    @property
    def pause_state(self) -> int:
        return self.sil_offset + self.sil_states // 2

    def word_states(self, w: int) -> np.ndarray:
        return np.arange(self.offsets[w], self.offsets[w + 1])

    def sil_state_ids(self) -> np.ndarray:
        return np.arange(self.sil_offset, self.sil_offset + self.sil_states)

    @property
    def next_lp(self) -> np.ndarray:
        return np.log1p(-np.exp(self.self_lp))

    def min_frames(self, words: list[str]) -> int:
        """Fewest frames a path through these words can take (one per state, pauses skipped)."""
        return int(sum(self.n_states[self.word_index[w]] for w in words))

    # ------------------------------------------------------------------ emissions
    def _prepare(self) -> None:
        """Gaussian log-densities as one matrix product: [x^2, x, 1] @ W -> [T, S*M]."""
        S, M, D = self.means.shape
        prec = 1.0 / self.variances
        const = (self.log_weights - 0.5 * (D * math.log(2 * math.pi) + np.log(self.variances).sum(-1)
                                           + (self.means ** 2 * prec).sum(-1)))
        w = np.concatenate([(-0.5 * prec).reshape(S * M, D).T, (self.means * prec).reshape(S * M, D).T,
                            const.reshape(1, S * M)], axis=0)
        # float32 for speed: log-densities of ~-10..-100 keep ~1e-5 relative precision, far below
        # what changes a Viterbi decision; the path bookkeeping stays in float64.
        self._w = np.ascontiguousarray(w, dtype=np.float32)
        self._next_lp = self.next_lp

    def loglik(self, x: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """Emission log-likelihoods ``[T, S]`` of features ``x [T, D]`` for every state, or only for
        ``states`` (the others are ``NEG``): a forced alignment visits only its words' states."""
        S, M, _ = self.means.shape
        x = np.asarray(x, dtype=np.float32)
        xx = np.concatenate([x * x, x, np.ones((len(x), 1), np.float32)], axis=1)
        if states is None:
            z = xx @ self._w
            return z.astype(np.float64) if M == 1 else _kernels.logsumexp_groups(z, S, M)
        states = np.unique(np.asarray(states, dtype=np.int64))
        cols = (states[:, None] * M + np.arange(M)[None, :]).ravel()
        z = xx @ self._w[:, cols]
        part = z.astype(np.float64) if M == 1 else _kernels.logsumexp_groups(z, len(states), M)
        out = np.full((len(x), S), NEG)
        out[:, states] = part
        return out

    # ------------------------------------------------------------------ graphs
    def forced_graph(self, words: list[str], lead_sil: bool = True, pauses: bool = True) -> dict:
        """Positions of ``[sil] w1 [pause] w2 ... wn [sil]`` (bracketed blocks optional)."""
        blocks: list[tuple[np.ndarray, bool, int]] = []  # (states, optional, word position or -1)
        sil = self.sil_state_ids()
        if lead_sil:
            blocks.append((sil, True, -1))
        for k, w in enumerate(words):
            if k > 0 and pauses:
                blocks.append((np.array([self.pause_state]), True, -1))
            blocks.append((self.word_states(self.word_index[w]), False, k))
        if lead_sil:
            blocks.append((sil, True, -1))
        state = np.concatenate([b[0] for b in blocks]).astype(np.int64)
        P = len(state)
        pred = np.full((P, 3), -1, np.int64)
        pred_lp = np.full((P, 3), NEG)
        start_lp = np.full(P, NEG)
        end_lp = np.full(P, NEG)
        word_of = np.full(P, -1, np.int64)
        self_lp, next_lp = self.self_lp, self._next_lp
        firsts, lasts = [], []
        p = 0
        for b, (st, optional, wpos) in enumerate(blocks):
            firsts.append(p)
            lasts.append(p + len(st) - 1)
            word_of[p:p + len(st)] = wpos
            for i in range(len(st)):
                q = p + i
                pred[q, 0], pred_lp[q, 0] = q, self_lp[state[q]]
                if i > 0:
                    pred[q, 1], pred_lp[q, 1] = q - 1, next_lp[state[q - 1]]
            p += len(st)
        for b in range(len(blocks)):
            f = firsts[b]
            if b > 0:
                pred[f, 1], pred_lp[f, 1] = lasts[b - 1], next_lp[state[lasts[b - 1]]]
                if blocks[b - 1][1] and b > 1:
                    pred[f, 2], pred_lp[f, 2] = lasts[b - 2], next_lp[state[lasts[b - 2]]]
        start_lp[firsts[0]] = 0.0
        if blocks[0][1]:
            start_lp[firsts[1]] = 0.0
        end_lp[lasts[-1]] = 0.0
        if blocks[-1][1]:
            end_lp[lasts[-2]] = 0.0
        return {"state": state, "pred": pred, "pred_lp": pred_lp, "start_lp": start_lp, "end_lp": end_lp,
                "word_of": word_of}

    def loop_graph(self, entry_lp: float) -> dict:
        """Every word chain and the silence chain, in any order: the free recogniser."""
        chains = [self.word_states(w) for w in range(len(self.words))] + [self.sil_state_ids()]
        state = np.concatenate(chains).astype(np.int64)
        lens = np.array([len(c) for c in chains])
        first = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        last = (first + lens - 1).astype(np.int64)
        entry = np.full(len(chains), float(entry_lp))
        entry[-1] = 0.0  # silence is free
        return {"state": state, "self_lp": self.self_lp[state].copy(), "next_lp": self._next_lp[state].copy(),
                "first": first, "last": last, "entry_lp": entry, "labels": list(self.words) + [""]}


def mixture_posteriors(x: np.ndarray, means: np.ndarray, variances: np.ndarray, log_weights: np.ndarray) -> np.ndarray:
    """Posterior ``[n, M]`` of each component of one state's diagonal Gaussian mixture (``means`` and
    ``variances`` ``[M, D]``, ``log_weights`` ``[M]``) for frames ``x [n, D]``: the E-step of
    training (``train._estimate``) and of speaker adaptation (``adapt.map_adapt``)."""
    z = (log_weights[None, :] - 0.5 * (np.log(variances).sum(-1)[None, :]
                                       + (((x[:, None, :] - means[None]) ** 2) / variances[None]).sum(-1)))
    z -= z.max(axis=1, keepdims=True)
    r = np.exp(z)
    r /= r.sum(axis=1, keepdims=True)
    return r


def forced_align(model: WordHMMs, ll: np.ndarray, words: list[str], graph: dict | None = None) -> tuple[float, np.ndarray, dict]:
    """Viterbi forced alignment: (score, path of positions, graph)."""
    g = graph or model.forced_graph(words)
    score, path = _kernels.viterbi_graph(ll, g["state"], g["pred"], g["pred_lp"], g["start_lp"], g["end_lp"])
    return float(score), path, g


def aligned_posteriors(model: WordHMMs, feats: np.ndarray, words: list[str]):
    """The E-step of adaptation for one utterance: ``feats`` force-aligned to ``words``, then for
    each state on the path (frame indices, state, mixture responsibilities ``[n, M]`` of those
    frames).  Yields nothing when the utterance is too short or no path fits.  Shared by MAP
    (``adapt.map_adapt``) and fMLLR (``fmllr.fmllr_stats``)."""
    x = np.asarray(feats, dtype=np.float64)
    if len(x) < model.min_frames(words):
        return
    g = model.forced_graph(words)
    _, path, g = forced_align(model, model.loglik(x, g["state"]), words, g)
    if path[0] < 0:
        return
    states = g["state"][path]
    for s in np.unique(states):
        at = np.flatnonzero(states == s)
        yield at, int(s), mixture_posteriors(x[at], model.means[s], model.variances[s], model.log_weights[s])


def loop_decode(model: WordHMMs, ll: np.ndarray, entry_lp: float) -> tuple[float, np.ndarray, dict]:
    """Free-loop Viterbi recognition: (score, path of positions, graph)."""
    g = model.loop_graph(entry_lp)
    score, path = _kernels.viterbi_loop(ll, g["state"], g["self_lp"], g["next_lp"], g["first"], g["last"],
                                        g["entry_lp"])
    return float(score), path, g


def word_spans(path: np.ndarray, word_of: np.ndarray, n_words: int) -> list[tuple[int, int]]:
    """``[start, end)`` frame span of each word position along a forced path."""
    w = word_of[path]
    spans = []
    for k in range(n_words):
        idx = np.flatnonzero(w == k)
        spans.append((int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0))
    return spans


def loop_words(path: np.ndarray, graph: dict) -> list[tuple[str, int, int]]:
    """Recognised (word, start, end) frames along a loop path (silence left out)."""
    first, last, labels = graph["first"], graph["last"], graph["labels"]
    chain = np.searchsorted(last, path)  # position -> chain index (chains are contiguous)
    out = []
    t = 0
    T = len(path)
    while t < T:
        c = chain[t]
        u = t + 1
        # a new word starts when the path re-enters a chain's first position from elsewhere
        while u < T and chain[u] == c and not (path[u] == first[c] and path[u - 1] == last[c]):
            u += 1
        if labels[c]:
            out.append((labels[c], t, u))
        t = u
    return out


# ---------------------------------------------------------------------------------- file I/O


def save_model(model: WordHMMs, model_dir: str | Path) -> Path:
    """Write ``model.npz`` (arrays) and ``model.json`` (vocabulary, config, calibration)."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / MODEL_NPZ) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, means=model.means, variances=model.variances, log_weights=model.log_weights,
                     self_lp=model.self_lp)
    write_json(d / MODEL_JSON, {
        "format_version": FORMAT_VERSION, "kind": "whole-word HMM", "words": model.words,
        "n_states": [int(n) for n in model.n_states], "sil_states": int(model.sil_states),
        "features": model.features.to_dict(), "calibration": model.calibration, "info": model.info,
    })
    return d


def load_model(model_dir: str | Path) -> WordHMMs:
    """Read a model written by :func:`save_model`; ValueError naming the file when it is not one."""
    d = Path(model_dir)
    js, npz = d / MODEL_JSON, d / MODEL_NPZ
    if not js.is_file() or not npz.is_file():
        raise ValueError(f"{d}: not an aligner model directory (needs {MODEL_JSON} and {MODEL_NPZ})")
    try:
        meta = json.loads(js.read_text())
        arrays = np.load(npz)
        model = WordHMMs(words=list(meta["words"]), n_states=[int(n) for n in meta["n_states"]],
                         sil_states=int(meta["sil_states"]), means=arrays["means"], variances=arrays["variances"],
                         log_weights=arrays["log_weights"], self_lp=arrays["self_lp"],
                         features=AlignFeatureConfig.from_dict(meta["features"]),
                         calibration=meta.get("calibration", {}), info=meta.get("info", {}))
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{d}: unreadable aligner model ({type(e).__name__}: {e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{js}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if model.means.shape[0] != model.num_states:
        raise ValueError(f"{npz}: {model.means.shape[0]} states, model.json describes {model.num_states}")
    return model


def model_sha256(model_dir: str | os.PathLike) -> str:
    """The identity of an aligner: sha256 over its ``model.json`` and ``model.npz``."""
    from ..io_utils import sha256_file

    d = Path(model_dir)
    return hashlib.sha256(" ".join(sha256_file(d / n) for n in (MODEL_JSON, MODEL_NPZ)).encode()).hexdigest()


_MODEL_CACHE: dict[str, WordHMMs] = {}
_MODEL_CACHE_SIZE = 16  # speaker-adapted models: a manifest's chunks hold few speakers each


def cached_model(model_dir: str | None) -> WordHMMs | None:
    """``load_model(model_dir)``, kept in a small per-process LRU cache (speaker-adapted models:
    a worker meets the same few again and again); None for None."""
    if model_dir is None:
        return None
    if model_dir in _MODEL_CACHE:
        _MODEL_CACHE[model_dir] = _MODEL_CACHE.pop(model_dir)  # most recently used last
    else:
        while len(_MODEL_CACHE) >= _MODEL_CACHE_SIZE:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[model_dir] = load_model(model_dir)
    return _MODEL_CACHE[model_dir]
