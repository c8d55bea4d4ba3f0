"""Per-class decision thresholds calibrated on the validation split (TF-free).

A label is predicted for an image when its probability is >= the label's threshold. For a target
precision the lowest threshold reaching it is chosen (the most recall); for a target recall the
highest one (the most precision). When no threshold reaches the target, ``target_met`` is False
and the threshold with the best reachable value is recorded instead.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from service.metadata import CalibrationCurve, ClassThreshold, Thresholds

MAX_CURVE_POINTS = 1000


def class_curve(
    positive: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (increasing) with the precision and recall of ``score >= threshold``."""
    precision, recall, thresholds = precision_recall_curve(positive, scores)
    # NOTE: sklearn appends a final (precision=1, recall=0) point that has no threshold.
    return thresholds.astype(np.float64), precision[:-1], recall[:-1]


def choose(
    thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray, policy: str, target: float
):
    """Index of the chosen threshold and whether the target was met."""
    value, other = (precision, recall) if policy == "precision" else (recall, precision)
    ok = np.flatnonzero(value >= target)
    if ok.size:
        # precision: lowest threshold (max recall); recall: highest threshold (max precision)
        return (int(ok[0]) if policy == "precision" else int(ok[-1])), True
    best = value.max()
    candidates = np.flatnonzero(value == best)
    return int(candidates[np.argmax(other[candidates])]), False


def _thinned(t: np.ndarray, p: np.ndarray, r: np.ndarray) -> CalibrationCurve:
    keep = np.unique(np.linspace(0, len(t) - 1, min(len(t), MAX_CURVE_POINTS)).round().astype(int))
    return CalibrationCurve(
        thresholds=t[keep].tolist(), precision=p[keep].tolist(), recall=r[keep].tolist()
    )


def calibrate(
    y_val: np.ndarray, probs_val: np.ndarray, labels: list[str], policy: str, target: float
) -> Thresholds:
    """Per-class thresholds meeting ``policy`` (precision|recall) >= target on validation."""
    per_class, curves = [], {}
    for c, label in enumerate(labels):
        t, p, r = class_curve((y_val == c).astype(int), probs_val[:, c])
        i, met = choose(t, p, r, policy, target)
        per_class.append(
            ClassThreshold(
                label=label,
                threshold=float(min(max(t[i], 0.0), 1.0)),
                val_precision=float(p[i]),
                val_recall=float(r[i]),
                target_met=met,
            )
        )
        curves[label] = _thinned(t, p, r)
    return Thresholds(policy=policy, target=target, per_class=per_class, curves=curves)


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
