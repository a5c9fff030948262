"""Speaker adaptation of the whole-word HMMs: MAP re-estimation of the Gaussian means (Gauvain &
Lee 1994) from one speaker's own transcribed utterances.

Why: a model trained on a few speakers places the word junctions of a new voice worse (the
leave-one-speaker-out folds of ``benchmarks/bench_align.py``: one speaker at 89 % of boundaries
within 50 ms against 97-99 % for the others).  Kaldi answers this with speaker-adapted alignment
(fMLLR in ``align_fmllr.sh``); with a few hundred frames per state and speaker, MAP on the means
is the simpler and sufficient form: every mean moves towards the speaker's frames aligned to it,
by ``n / (n + tau)`` of the way, so a state the speaker seldom visits keeps the model's mean.

The forced alignment with the transcript gives the frames; the alignment and the mixture
responsibilities are recomputed with the adapted model each iteration, and the prior stays the
unadapted model (standard MAP, not a drifting one).  Pure function of arrays: the ``segment``
stage reads the audio and decides which utterances to trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..config import ConfigMixin
from .hmm import WordHMMs, aligned_posteriors


@dataclass(frozen=True)
class AdaptConfig(ConfigMixin):
    iterations: int = 0  # align -> re-estimate rounds; 0 = no adaptation
    tau: float = 10.0  # prior weight in frames: a state's mean moves n / (n + tau) towards its frames
    # Which of a speaker's utterances it adapts on: "aligned", every one its transcript's forced
    # path fits (the score and recognition checks then run with the adapted model); "accepted",
    # only those the unadapted aligner accepts with every check.  On 12 voices from outside FSDD
    # "accepted" rejected all 250 correct transcripts (no utterance passed, so nothing adapted) and
    # "aligned" 18; on FSDD's held-out takes "aligned" catches 96.7 % of dropped words against
    # 98.7 % (docs/alignment.md, "Voices from outside FSDD").
    data: str = "aligned"
    # The "noise, not speech" score threshold follows the speaker: lowered by how far the speaker's
    # median forced score lies below the training voices' median, at most this much (nats per
    # frame; 0 = the calibrated threshold for everyone; needs 5 utterances of the speaker).
    score_shift_max: float = 15.0

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.tau <= 0:
            raise ValueError(f"adaptation needs iterations >= 0 and tau > 0, got {self.iterations}, {self.tau}")
        if not 0 <= self.score_shift_max <= 100:
            raise ValueError(f"adapt.score_shift_max must be in [0, 100] nats per frame, got {self.score_shift_max}")
        if self.data not in ("aligned", "accepted"):
            raise ValueError(f"adapt.data must be 'aligned' or 'accepted', got {self.data!r}")


def map_adapt(model: WordHMMs, data: Sequence[tuple[np.ndarray, list[str]]], cfg: AdaptConfig) -> WordHMMs:
    """The model with its means MAP-adapted to ``data`` (features, transcript words) of one speaker.

    Utterances no path fits are skipped; with no usable utterance (or ``iterations == 0``) the
    model comes back unchanged.  Variances, weights, transitions and calibration are kept.
    """
    adapted = model
    S, M, D = model.means.shape
    for _ in range(cfg.iterations):
        acc = np.zeros((S, M, D))
        occ = np.zeros((S, M))
        for feats, words in data:
            x = np.asarray(feats, dtype=np.float64)
            for at, s, r in aligned_posteriors(adapted, x, words):
                acc[s] += r.T @ x[at]
                occ[s] += r.sum(axis=0)
        if not occ.any():
            return model
        means = (cfg.tau * model.means + acc) / (cfg.tau + occ[..., None])
        adapted = WordHMMs(model.words, model.n_states, model.sil_states, means, model.variances, model.log_weights,
                           model.self_lp, model.features, model.calibration,
                           {**model.info, "adapted": {"utterances": len(data), "frames": int(occ.sum()),
                                                      **cfg.to_dict()}})
    return adapted
