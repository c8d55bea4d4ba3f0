"""Per-class decision thresholds with a stated confidence (TF-free).

A label is predicted for an image when its probability is >= the label's threshold. The rule and
its statistics live in :mod:`contract.calibration` (the server re-targets with the same code); this
module applies it to calibration predictions and stores what the server and the model card need.
"""

from __future__ import annotations

import numpy as np

from contract.calibration import Choice, CurveCounts, choose, curve_counts
from contract.metadata import CalibrationCurve, ClassThreshold, Thresholds

MAX_CURVE_POINTS = 1000


def _thinned(counts: CurveCounts, chosen: int) -> CalibrationCurve:
    """At most MAX_CURVE_POINTS points, always including the chosen one (exact re-targeting)."""
    t = counts.thresholds
    keep = np.linspace(0, len(t) - 1, min(len(t), MAX_CURVE_POINTS)).round().astype(int)
    keep = np.unique(np.r_[keep, chosen])
    return CalibrationCurve(
        thresholds=t[keep].tolist(),
        precision=counts.precision[keep].tolist(),
        recall=counts.recall[keep].tolist(),
        tp=counts.tp[keep].tolist(),
        predicted=counts.predicted[keep].tolist(),
        positives=counts.positives,
    )


def _class_threshold(label: str, counts: CurveCounts, choice: Choice) -> ClassThreshold:
    i = choice.index
    precision, recall = float(counts.precision[i]), float(counts.recall[i])
    return ClassThreshold(
        label=label,
        threshold=float(min(max(counts.thresholds[i], 0.0), 1.0)),
        val_precision=precision,
        val_recall=recall,
        # Never "met" without the guarantee: a certified threshold's point estimate is at
        # least its bound; an uncertified one's estimate is in val_precision / val_recall.
        target_met=choice.certified,
        lower_bound=choice.lower_bound,
        support=choice.support,
        certified=choice.certified,
        best_certified=choice.best_certified,
        needed=choice.needed,
    )


def calibrate(
    y_cal: np.ndarray,
    probs_cal: np.ndarray,
    labels: list[str],
    policy: str,
    target: float,
    confidence: float = 0.95,
    method: str = "validation split",
) -> Thresholds:
    """Per-class thresholds whose lower bound of ``policy`` (precision|recall) reaches ``target``."""
    per_class, curves = [], {}
    for c, label in enumerate(labels):
        counts = curve_counts(y_cal == c, probs_cal[:, c])
        choice = choose(counts, policy, target, confidence)
        per_class.append(_class_threshold(label, counts, choice))
        curves[label] = _thinned(counts, choice.index)
    return Thresholds(
        policy=policy,
        target=target,
        per_class=per_class,
        curves=curves,
        confidence=confidence,
        method=f"{method}; one-sided Clopper-Pearson lower bound at confidence {confidence:g}",
    )


def with_test_results(
    thresholds: Thresholds, y_test: np.ndarray, probs_test: np.ndarray
) -> Thresholds:
    """Add how each chosen threshold did on the test split (precision, recall)."""
    updated = []
    for c, ct in enumerate(thresholds.per_class):
        predicted = probs_test[:, c] >= ct.threshold
        actual = y_test == c
        tp = int((predicted & actual).sum())
        precision = tp / int(predicted.sum()) if predicted.any() else 0.0
        recall = tp / int(actual.sum()) if actual.any() else 0.0
        updated.append(ct.model_copy(update={"test_precision": precision, "test_recall": recall}))
    return thresholds.model_copy(update={"per_class": updated})
