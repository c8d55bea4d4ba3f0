"""Per-class threshold calibration on synthetic validation scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

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
def test_precision_target_is_certified_where_the_data_allows(target: float) -> None:
    y, scores = _synthetic()
    th = calibrate(y, scores, LABELS, "precision", target, confidence=0.95)
    assert [c.label for c in th.per_class] == LABELS
    assert th.confidence == 0.95 and "Clopper-Pearson" in th.method
    for c, ct in enumerate(th.per_class):
        precision, recall = _precision_recall(y, scores, c, ct.threshold)
        assert precision == pytest.approx(ct.val_precision) and recall == pytest.approx(
            ct.val_recall
        )
        predicted = int((scores[:, c] >= ct.threshold).sum())
        assert ct.support == predicted
        bound = beta.ppf(0.05, precision * predicted, predicted - precision * predicted + 1)
        assert ct.lower_bound == pytest.approx(bound)
        assert ct.certified == (ct.lower_bound >= target)
        if ct.certified:
            # the most recall among certified thresholds: one step lower is not certified
            lower = [t for t in th.curves[ct.label].thresholds if t < ct.threshold]
            if lower:
                tp = ((scores[:, c] >= max(lower)) & (y == c)).sum()
                n = (scores[:, c] >= max(lower)).sum()
                assert beta.ppf(0.05, tp, n - tp + 1) < target or tp == round(
                    recall * (y == c).sum()
                )
    assert th.per_class[0].certified
    hard = th.per_class[1]
    assert not hard.certified and not hard.target_met  # pure noise cannot reach 0.8 precision
    assert hard.needed is None  # and more data at that error rate would not help


def test_uncertified_class_reports_the_best_certifiable_level() -> None:
    y, scores = _synthetic()
    th = calibrate(y, scores, LABELS, "precision", 0.99)
    for ct in th.per_class:
        if not ct.certified:
            assert ct.lower_bound == pytest.approx(ct.best_certified)
            assert ct.best_certified < 0.99
    easy = th.per_class[0]  # perfectly separated but only ~200 images: 0.99 needs ~300
    assert not easy.certified and easy.val_precision == 1.0 and easy.needed == 299


def test_recall_policy_keeps_the_most_precision_among_certified_thresholds() -> None:
    y, scores = _synthetic()
    th = calibrate(y, scores, LABELS, "recall", 0.9)
    assert th.policy == "recall" and th.target == 0.9
    for c, ct in enumerate(th.per_class):
        assert ct.certified and ct.support == (y == c).sum()
        _, recall = _precision_recall(y, scores, c, ct.threshold)
        assert recall >= ct.lower_bound >= 0.9
        curve = th.curves[ct.label]
        bounds = beta.ppf(0.05, curve.tp, ct.support - np.asarray(curve.tp) + 1)
        certified_precision = np.asarray(curve.precision)[bounds >= 0.9]
        assert ct.val_precision == pytest.approx(certified_precision.max())


def test_curves_are_stored_for_retargeting_and_test_results_are_reported() -> None:
    y, scores = _synthetic()
    y_test, scores_test = _synthetic(seed=1)
    th = with_test_results(calibrate(y, scores, LABELS, "precision", 0.9), y_test, scores_test)
    for c, ct in enumerate(th.per_class):
        curve = th.curves[ct.label]
        assert len(curve.thresholds) == len(curve.precision) == len(curve.recall) > 10
        assert len(curve.tp) == len(curve.predicted) == len(curve.thresholds)
        assert curve.positives == (y == c).sum()
        assert ct.threshold in curve.thresholds  # kept when thinned: re-targeting is exact
        assert curve.thresholds == sorted(curve.thresholds)
        precision, recall = _precision_recall(y_test, scores_test, c, ct.threshold)
        assert (ct.test_precision, ct.test_recall) == pytest.approx((precision, recall))
