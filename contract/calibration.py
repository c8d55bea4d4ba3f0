"""Thresholds with a stated confidence: Clopper-Pearson bounds on per-threshold counts (TF-free).

Training chooses each class's threshold with :func:`choose`; the server re-targets per request
with the same function on the counts stored in ``metadata.json`` (``CalibrationCurve``), so a
request's ``certified`` means exactly what the model card's does.

A threshold *certifies* a target when the one-sided lower confidence bound of the targeted metric
(precision: true positives out of predicted positives; recall: true positives out of positives)
is at least the target. Among certifying thresholds a precision target keeps the most recall and a
recall target the most precision; ties go to the higher threshold, which predicts fewer images.
NOTE: the bound holds for each threshold on its own; picking one among many makes it slightly
optimistic. docs/training.md reports how often it held on a held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Policy = str  # "precision" | "recall"
MAX_NEEDED = 10_000_000


def _betaincinv() -> Any:
    # scipy.stats.beta.ppf(q, a, b) is betaincinv(a, b, q). Imported on first use, not with the
    # module: every serving process imports this one, and scipy.special is ~17 MB of it at rest
    # that a server holds only once feedback arrives (docs/benchmarks.md, issue 25).
    from scipy.special import betaincinv

    return betaincinv


def lower_bound(successes: np.ndarray, trials: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of a binomial proportion (0 where nothing succeeded).

    ``successes`` may be fractional (for :func:`needed_trials`); the beta distribution's quantile
    (scipy's inverse regularised incomplete beta function) does the work.
    """
    betaincinv = _betaincinv()
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    safe_k = np.where(k > 0, k, 1.0)
    bound = betaincinv(safe_k, np.maximum(n - k + 1.0, 1e-12), 1.0 - confidence)
    return np.where(k > 0, bound, 0.0)


def upper_bound(successes: np.ndarray, trials: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound: the ``confidence`` quantile of Beta(k + 1, n - k),
    1 where everything succeeded."""
    betaincinv = _betaincinv()
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    bound = betaincinv(k + 1.0, np.maximum(n - k, 1e-12), confidence)
    return np.where(k < n, bound, 1.0)


@dataclass(frozen=True)
class CurveCounts:
    """One class, one-vs-rest: per threshold (increasing), the counts of ``score >= threshold``."""

    thresholds: np.ndarray  # float64, increasing: the distinct scores
    tp: np.ndarray  # int64: true positives
    predicted: np.ndarray  # int64: predicted positives
    positives: int  # images of the class

    @property
    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.predicted, 1)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / max(self.positives, 1)

    def metric(self, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
        """(successes, trials) of the targeted metric at each threshold."""
        if policy == "precision":
            return self.tp, self.predicted
        return self.tp, np.full_like(self.tp, self.positives)


def curve_counts(positive: np.ndarray, scores: np.ndarray) -> CurveCounts:
    """Counts at every distinct score (the only thresholds that change the prediction)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order].astype(np.float64), positive[order].astype(bool)
    tp = np.cumsum(hits)
    # The last position of each distinct score: ``>= score`` includes every tie.
    last = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    return CurveCounts(
        thresholds=sorted_scores[last][::-1].copy(),
        tp=tp[last][::-1].astype(np.int64),
        predicted=(last + 1)[::-1].astype(np.int64),
        positives=int(hits.sum()),
    )


@dataclass(frozen=True)
class Choice:
    """The chosen threshold index and what can be claimed about it."""

    index: int
    certified: bool
    lower_bound: float  # of the targeted metric at ``index``
    support: int  # trials behind the bound at ``index``
    best_certified: float  # the highest lower bound over all thresholds
    needed: int | None  # when uncertified: about how many images of the class would certify


def _best(candidates: np.ndarray, key: np.ndarray) -> int:
    """The candidate with the largest key; ties go to the highest threshold (last index)."""
    values = key[candidates]
    return int(candidates[np.flatnonzero(values == values.max())[-1]])


def choose(counts: CurveCounts, policy: Policy, target: float, confidence: float) -> Choice:
    """Per the module docstring; uncertified: the threshold with the highest lower bound."""
    successes, trials = counts.metric(policy)
    bounds = lower_bound(successes, trials, confidence)
    other = counts.recall if policy == "precision" else counts.precision
    ok = np.flatnonzero(bounds >= target)
    certified = ok.size > 0
    top = np.flatnonzero(bounds == bounds.max())
    index = _best(ok if certified else top, other)
    return Choice(
        index=index,
        certified=certified,
        lower_bound=float(bounds[index]),
        support=int(trials[index]),
        best_certified=float(bounds.max()),
        needed=None if certified else _needed_images(counts, policy, target, confidence),
    )


def choose_by_estimate(
    precision: np.ndarray, recall: np.ndarray, policy: Policy, target: float
) -> int:
    """For curves without counts (older or imported metadata): the index of the threshold a
    point-estimate rule picks. Precision: the lowest threshold reaching it (the most recall);
    recall: the highest; unreachable: the best value seen. Nothing is certified this way."""
    values = precision if policy == "precision" else recall
    ok = np.flatnonzero(values >= target)
    if not ok.size:
        return int(np.argmax(values))
    return int(ok.min() if policy == "precision" else ok.max())


def _needed_images(
    counts: CurveCounts, policy: Policy, target: float, confidence: float
) -> int | None:
    """Images of the class that would certify ``target`` if the observed error rate held.

    The observed rate is the point estimate at the threshold a point-estimate rule would choose
    (the most recall, or precision, among thresholds whose estimate reaches the target). None when
    no threshold's estimate reaches it: more data at that error rate cannot help.
    """
    successes, trials = counts.metric(policy)
    rate = successes / np.maximum(trials, 1)
    reach = np.flatnonzero(rate >= target)
    if reach.size == 0 or counts.positives == 0:
        return None
    other = counts.recall if policy == "precision" else counts.precision
    i = _best(reach, other)
    n = needed_trials(float(rate[i]), target, confidence, start=int(trials[i]))
    if n is None:
        return None
    # a precision bound rests on predicted positives: convert to images of the class
    return int(np.ceil(n * rate[i] / counts.recall[i])) if policy == "precision" else n


def needed_trials(rate: float, target: float, confidence: float, start: int = 1) -> int | None:
    """Smallest n whose bound on ``rate * n`` successes of n reaches ``target`` (None: never)."""

    def reaches(n: int) -> bool:
        return bool(lower_bound(np.array(rate * n), np.array(float(n)), confidence) >= target)

    if rate <= target:
        return None
    high = max(start, 1)
    while not reaches(high):
        high *= 2
        if high > MAX_NEEDED:
            return None
    low = 0
    while high - low > 1:  # reaches(high) holds; reaches(low) does not (or low is 0)
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high
