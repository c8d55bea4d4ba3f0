"""The statistics of live verification: Clopper-Pearson lower bounds and the population
stability index (PSI). Pure functions over counts, each unit-tested with hand-computed values."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from contract.calibration import lower_bound, upper_bound

# PSI takes log(observed / expected); a bin empty on either side would make it infinite.
# Empty bins count as this fraction instead (the usual practice for PSI), so one unseen label
# adds a bounded, visible term rather than an infinity that hides every other change.
PSI_FLOOR = 1e-4


def clopper_pearson_lower(
    successes: np.ndarray, trials: np.ndarray, confidence: float
) -> np.ndarray:
    """Calibration's lower bound (``contract.calibration``), NaN where there are no trials."""
    n = np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, lower_bound(successes, n, confidence), np.nan)


def clopper_pearson_upper(
    successes: np.ndarray, trials: np.ndarray, confidence: float
) -> np.ndarray:
    """Calibration's upper bound (``contract.calibration``), NaN where there are no trials."""
    n = np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, upper_bound(successes, n, confidence), np.nan)


def ratio(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """successes / trials, NaN where there are no trials."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / n, np.nan)


def psi(expected: np.ndarray, observed: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of two distributions over the same bins.

    PSI = sum((o - e) * ln(o / e)), the symmetric Kullback-Leibler divergence.
    ``observed`` may be counts: both sides are normalised, empty bins floored at ``floor``.
    Usual reading: < 0.1 stable, 0.1-0.2 a shift, > 0.2 drift.

    Written in numpy rather than with scipy's ``rel_entr``: both sides are floored above 0, so
    the edge cases ``rel_entr`` handles cannot occur, and every serving worker refreshes its
    drift gauges, which imported SciPy (17 MB RSS per worker) for this one line.
    """
    e = _distribution(expected, floor)
    o = _distribution(observed, floor)
    return float(np.sum((o - e) * np.log(o / e)))


def _distribution(values: np.ndarray, floor: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    total = v.sum()
    if total <= 0:
        raise ValueError("a distribution needs a positive total")
    return np.maximum(v / total, floor)


def bin_indices(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """The histogram bin of each value (as ``np.histogram``: [a, b), the last bin [a, b]);
    values outside the edges go to the first/last bin."""
    # Bisect over the inner edges gives 0 … bins-1 directly; for the few images of one
    # request it costs a fraction of numpy's searchsorted (and clip) on the request path.
    inner = edges[1:-1]
    return [bisect_right(inner, v) for v in values]
