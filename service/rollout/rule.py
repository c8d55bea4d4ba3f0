"""The decision rule of a rollout: promote a candidate that is not worse, roll back one that is.

Evidence is feedback on each version's own answers: per class, the images the version labelled
with that class (its precision's trials) and how many of them truly were (successes). The rule
compares the candidate's precision ``p1`` with the current version's ``p2`` per class, with
Newcombe's hybrid score interval for ``p1 - p2`` (Newcombe 1998, method 10: the difference of two
Wilson score intervals), one-sided at the spec's ``confidence``:

* **roll back** as soon as the candidate is worse by more than ``margin``: the upper bound of
  ``p1 - p2`` is below ``-margin``, overall (every answered label pooled) or in any one class.
  The ``K + 1`` tests share the error rate (Bonferroni): each is made at
  ``1 - (1 - confidence) / (K + 1)``. A loss within the margin is never a reason to roll back
  (two seeds of the same model differ by a few points in some class), one beyond it is never
  promoted; ``margin: 0`` rolls back on any loss shown.
* **promote** when, with at least ``min_feedback`` feedback images on the candidate's answers,
  every class either version predicted has a lower bound of ``p1 - p2`` above ``-margin``. That is
  an intersection-union test: each class at ``confidence`` gives the whole at ``confidence``.
* otherwise **wait**.

Written here rather than taken from statsmodels (``confint_proportions_2indep(method="newcomb")``,
which the tests compare it with): the serving install does not carry statsmodels, and the interval
is six lines over the standard library's normal quantile (``statistics.NormalDist``: SciPy stays
out of a serving worker until feedback needs its Clopper-Pearson bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

Action = Literal["promote", "roll_back", "wait"]


@dataclass
class Counts:
    """One version's feedback outcomes at its served thresholds, per class (one-vs-rest)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    images: int = 0

    @classmethod
    def zeros(cls, classes: int) -> Counts:
        z = np.zeros(classes, np.int64)
        return cls(z.copy(), z.copy(), z.copy())

    def add(self, predicted: tuple[int, ...], truth: int) -> None:
        self.images += 1
        for c in predicted:
            if c == truth:
                self.tp[c] += 1
            else:
                self.fp[c] += 1
        if truth not in predicted:
            self.fn[truth] += 1

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.images + other.images
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "tp": self.tp.tolist(),
            "fp": self.fp.tolist(),
            "fn": self.fn.tolist(),
            "images": self.images,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], classes: int) -> Counts:
        arrays = [np.asarray(data[k], np.int64) for k in ("tp", "fp", "fn")]
        images = int(data["images"])
        if any(a.shape != (classes,) or (a < 0).any() for a in arrays) or images < 0:
            raise ValueError(f"non-negative counts of {classes} classes expected")
        return cls(*arrays, images=images)


def wilson(successes: float, trials: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion at normal quantile ``z`` (trials > 0)."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s2: int, n2: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``s1/n1 - s2/n2`` at quantile ``z`` (n1, n2 > 0)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1, z)
    l2, u2 = wilson(s2, n2, z)
    d = p1 - p2
    return max(-1.0, d - math.hypot(p1 - l1, u2 - p2)), min(1.0, d + math.hypot(u1 - p1, p2 - l2))


@dataclass(frozen=True)
class Comparison:
    """One class (or ``overall``): both precisions, their supports, the difference's bounds."""

    label: str
    candidate: float | None
    candidate_support: int
    current: float | None
    current_support: int
    lower: float | None  # of candidate - current, at the promotion quantile
    upper: float | None  # of candidate - current, at the roll-back quantile

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    classes: list[Comparison] = field(default_factory=list)
    overall: Comparison | None = None


def judge(
    current: Counts,
    candidate: Counts,
    labels: list[str],
    *,
    confidence: float,
    margin: float,
    min_feedback: int,
) -> Verdict:
    """What the evidence says: ``promote``, ``roll_back`` or ``wait``, with the comparisons."""
    k = len(labels)
    z_promote = NormalDist().inv_cdf(confidence)
    z_back = NormalDist().inv_cdf(1 - (1 - confidence) / (k + 1))

    def compare(label: str, s1: int, n1: int, s2: int, n2: int) -> Comparison:
        lower = upper = None
        if n1 and n2:
            lower = newcombe(s1, n1, s2, n2, z_promote)[0]
            upper = newcombe(s1, n1, s2, n2, z_back)[1]
        return Comparison(
            label, s1 / n1 if n1 else None, n1, s2 / n2 if n2 else None, n2, lower, upper
        )

    n_cand, n_cur = candidate.tp + candidate.fp, current.tp + current.fp
    classes = [
        compare(labels[c], int(candidate.tp[c]), int(n_cand[c]), int(current.tp[c]), int(n_cur[c]))
        for c in range(k)
    ]
    overall = compare(
        "overall",
        int(candidate.tp.sum()),
        int(n_cand.sum()),
        int(current.tp.sum()),
        int(n_cur.sum()),
    )
    level = 1 - (1 - confidence) / (k + 1)
    worse = [c for c in [*classes, overall] if c.upper is not None and c.upper < -margin]
    if worse:
        named = ", ".join(
            f"{'overall' if c is overall else 'class ' + c.label} {c.candidate:.3f} against "
            f"{c.current:.3f} (upper bound {c.upper:+.3f})"
            for c in worse[:5]
        )
        return Verdict(
            "roll_back",
            f"the candidate's precision is worse than the current version's by more than "
            f"{margin:g} at {level:.4f}: " + named,
            classes,
            overall,
        )
    if candidate.images < min_feedback:
        return Verdict(
            "wait",
            f"{candidate.images} of {min_feedback} feedback images on the candidate's answers",
            classes,
            overall,
        )
    if overall.lower is None:
        return Verdict(
            "wait", "neither version has labelled a feedback image yet", classes, overall
        )
    open_ = [c for c in classes if c.candidate_support or c.current_support]
    unknown = [c.label for c in open_ if c.lower is None]
    if unknown:
        return Verdict(
            "wait",
            "no feedback yet on one version's answers of class(es) " + ", ".join(unknown[:10]),
            classes,
            overall,
        )
    short = [c for c in open_ if c.lower is not None and c.lower <= -margin]
    if short:
        worst = min(short, key=lambda c: c.lower or 0.0)
        return Verdict(
            "wait",
            f"{len(short)} class(es) not yet shown within the margin {margin:g} (class "
            f"{worst.label}: lower bound {worst.lower:+.3f} at {confidence:g})",
            classes,
            overall,
        )
    return Verdict(
        "promote",
        f"every class's precision is within {margin:g} of the current version's or better "
        f"at {confidence:g}, over {candidate.images} feedback images",
        classes,
        overall,
    )
