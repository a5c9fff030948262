"""Segmentation quality against known boundaries: boundary errors and segment overlap."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Span = Sequence[float]


def iou(a: Span, b: Span) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def score_boundaries(pred: Mapping[str, Sequence[Span]], truth: Mapping[str, Sequence[Span]],
                     tolerance_s: float = 0.05, iou_min: float = 0.8) -> dict:
    """Compare predicted and true ``[start, end]`` seconds of every word of every utterance.

    Utterances in ``truth`` but not in ``pred`` count as ``missing`` (rejected); the error figures
    are over the predicted ones.  A predicted utterance with the wrong number of words is an error.
    Returns median / mean / 95th-percentile absolute boundary error (ms; starts and ends pooled),
    the fraction of boundaries within ``tolerance_s``, and the fraction of words with IoU >= ``iou_min``.
    """
    errs, ious = [], []
    missing = wrong_count = 0
    for uid, t in truth.items():
        p = pred.get(uid)
        if p is None:
            missing += 1
            continue
        if len(p) != len(t):
            wrong_count += 1
            continue
        for ps, ts in zip(p, t):
            errs.extend([abs(ps[0] - ts[0]), abs(ps[1] - ts[1])])
            ious.append(iou(ps, ts))
    e = np.asarray(errs) * 1000.0
    n = len(truth)
    return {
        "utterances": n, "scored": n - missing - wrong_count, "missing": missing, "wrong_count": wrong_count,
        "words": len(ious), "boundaries": len(e),
        "median_ms": float(np.median(e)) if len(e) else float("nan"),
        "mean_ms": float(e.mean()) if len(e) else float("nan"),
        "p95_ms": float(np.quantile(e, 0.95)) if len(e) else float("nan"),
        "within_pct": 100.0 * float((e <= tolerance_s * 1000 + 1e-9).mean()) if len(e) else float("nan"),
        "iou_pct": 100.0 * float((np.asarray(ious) >= iou_min).mean()) if ious else float("nan"),
        "tolerance_ms": tolerance_s * 1000, "iou_min": iou_min,
    }


def format_score(s: dict) -> str:
    return (f"median {s['median_ms']:.1f} ms, {s['within_pct']:.1f} % within {s['tolerance_ms']:.0f} ms, "
            f"{s['iou_pct']:.1f} % IoU >= {s['iou_min']} ({s['scored']}/{s['utterances']} utterances, "
            f"{s['words']} words; rejected {s['missing']})")
