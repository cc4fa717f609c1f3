"""Seeded paired bootstrap of a metric difference on one holdout.

The challenger and the reference (champion or baseline) are scored on the same holdout rows.  Every
resample draws ``n`` row indices with replacement (seeded) and computes ``improvement = metric(challenger)
- metric(reference)`` (sign flipped for lower-is-better metrics) on those rows for **both** models, so
the row-to-row variation they share cancels: that is what makes the comparison paired.  The lower
confidence bound is the ``1 - confidence`` quantile of the resampled improvements (one-sided percentile
interval).  A resample on which the metric is undefined (AUC of a one-class resample) is skipped; when
fewer than half the resamples are usable the bound is NaN and the gate refuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lakeloop.train import metrics

__all__ = ["Comparison", "paired_bootstrap"]


@dataclass
class Comparison:
    """Point improvement, its lower confidence bound, and how it was computed."""

    improvement: float
    lower_bound: float
    confidence: float
    resamples: int
    usable: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(task: str, name: str, y: np.ndarray, challenger: np.ndarray, reference: np.ndarray, *,
                     resamples: int, confidence: float, seed: int) -> Comparison:
    """Improvement of ``challenger`` over ``reference`` on ``y`` and its one-sided lower confidence bound."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence}: expected a number between 0 and 1")
    if resamples < 1:
        raise ValueError(f"bootstrap resamples {resamples}: expected at least 1")
    fn, higher = metrics.metric(task, name).fn, metrics.metric(task, name).higher_is_better
    y, challenger, reference = (np.asarray(a, dtype=float) for a in (y, challenger, reference))
    sign = 1.0 if higher else -1.0
    point = sign * (fn(y, challenger) - fn(y, reference))
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        try:
            with np.errstate(all="ignore"):
                d = sign * (fn(y[idx], challenger[idx]) - fn(y[idx], reference[idx]))
        except ValueError:  # e.g. AUC of a resample holding one class
            continue
        if np.isfinite(d):
            diffs.append(d)
    usable = len(diffs)
    lower = float(np.quantile(diffs, 1.0 - confidence)) if usable * 2 >= resamples else float("nan")
    return Comparison(improvement=float(point), lower_bound=lower, confidence=confidence,
                      resamples=resamples, usable=usable, seed=seed)
