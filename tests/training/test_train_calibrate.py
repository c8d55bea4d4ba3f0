"""Per-class threshold calibration on synthetic validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibrate import calibrate, with_test_results

LABELS = ["easy", "hard", "mixed"]


def _synthetic(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """'easy' separates well, 'hard' has scores independent of the label, 'mixed' in between."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    scores = rng.random((n, 3)) * 0.5
    scores[y == 0, 0] += 0.5  # easy: positives always score higher
    scores[:, 1] = rng.random(n)  # hard: pure noise
    scores[y == 2, 2] += rng.random((y == 2).sum()) * 0.5
    return y, scores  # NOTE: not normalised: a row sum would leak the label into 'hard'.


def _precision_recall(
    y: np.ndarray, scores: np.ndarray, c: int, threshold: float
) -> tuple[float, float]:
    predicted, actual = scores[:, c] >= threshold, y == c
    tp = (predicted & actual).sum()
    return tp / max(predicted.sum(), 1), tp / actual.sum()


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_precision_target_is_met_on_validation_where_reachable(target: float) -> None:
    y, scores = _synthetic()
    th = calibrate(y, scores, LABELS, "precision", target)
    assert [c.label for c in th.per_class] == LABELS
    for c, ct in enumerate(th.per_class):
        precision, recall = _precision_recall(y, scores, c, ct.threshold)
        assert precision == pytest.approx(ct.val_precision) and recall == pytest.approx(
            ct.val_recall
        )
        if ct.target_met:
            assert precision >= target
            # the lowest such threshold: one step lower would fail the target or not add recall
            lower = [t for t in th.curves[ct.label].thresholds if t < ct.threshold]
            if lower:
                assert _precision_recall(y, scores, c, max(lower))[0] < target
    assert th.per_class[0].target_met
    assert not th.per_class[1].target_met  # pure noise cannot reach 0.8 precision


def test_unreachable_target_records_the_best_reachable_threshold() -> None:
    y, scores = _synthetic()
    th = calibrate(y, scores, LABELS, "precision", 0.99)
    hard = th.per_class[1]
    assert hard.target_met is False
    curve = th.curves["hard"]
    assert hard.val_precision == pytest.approx(max(curve.precision))
    assert hard.val_precision < 0.99


def test_recall_policy_picks_the_highest_threshold_meeting_recall() -> None:
    y, scores = _synthetic()
    th = calibrate(y, scores, LABELS, "recall", 0.9)
    assert th.policy == "recall" and th.target == 0.9
    for c, ct in enumerate(th.per_class):
        assert ct.target_met
        _, recall = _precision_recall(y, scores, c, ct.threshold)
        assert recall >= 0.9
        higher = [t for t in th.curves[ct.label].thresholds if t > ct.threshold]
        if higher:
            assert _precision_recall(y, scores, c, min(higher))[1] < 0.9


def test_curves_are_stored_for_retargeting_and_test_results_are_reported() -> None:
    y, scores = _synthetic()
    y_test, scores_test = _synthetic(seed=1)
    th = with_test_results(calibrate(y, scores, LABELS, "precision", 0.9), y_test, scores_test)
    for c, ct in enumerate(th.per_class):
        curve = th.curves[ct.label]
        assert len(curve.thresholds) == len(curve.precision) == len(curve.recall) > 10
        assert curve.thresholds == sorted(curve.thresholds)
        precision, recall = _precision_recall(y_test, scores_test, c, ct.threshold)
        assert (ct.test_precision, ct.test_recall) == pytest.approx((precision, recall))
