"""postprocess.batch_metrics: macro averages over the labels present (scikit-learn's rule)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from service.postprocess import batch_metrics

LABELS = [str(d) for d in range(10)]
HALF = np.full(10, 0.5, np.float32)


def _probs(*winners: int) -> np.ndarray:
    probs = np.full((len(winners), 10), 0.01, np.float32)
    probs[np.arange(len(winners)), winners] = 0.91
    return probs


def test_two_correct_images_score_one_not_a_fifth() -> None:
    m = batch_metrics(_probs(7, 1), HALF, np.array([7, 1]), LABELS)
    assert (m.macro_precision, m.macro_recall, m.macro_f1) == (1.0, 1.0, 1.0)
    assert m.macro_labels == ["1", "7"]
    assert m.per_class["3"].support == 0 and m.per_class["3"].precision == 0.0
    assert m.per_class["7"].support == 1 and m.per_class["7"].precision == 1.0


def test_one_label_per_image_matches_scikit_learn_multiclass_default() -> None:
    # 7 → 7, 1 → 7 (wrong), 2 → 2: labels present are 1, 2, 7
    truth, winners = np.array([7, 1, 2]), [7, 7, 2]
    m = batch_metrics(_probs(*winners), HALF, truth, LABELS)
    p, r, f, _ = precision_recall_fscore_support(
        truth, winners, average="macro", zero_division=0
    )  # labels=None: the labels in y_true ∪ y_pred
    assert (m.macro_precision, m.macro_recall, m.macro_f1) == pytest.approx((p, r, f))
    # by hand: precision (1: 0/0 → 0, 2: 1, 7: 1/2) / 3; recall (0, 1, 1) / 3
    assert m.macro_precision == pytest.approx(0.5) and m.macro_recall == pytest.approx(2 / 3)
    assert m.macro_labels == ["1", "2", "7"]


def test_a_label_only_predicted_counts_in_the_average() -> None:
    probs = _probs(4)
    probs[0, 5] = 0.6  # 4 and 5 both pass 0.5; the truth is 4
    m = batch_metrics(probs, HALF, np.array([4]), LABELS)
    assert m.macro_labels == ["4", "5"]
    assert m.macro_precision == pytest.approx(0.5)  # (1 + 0) / 2
    assert m.macro_recall == pytest.approx(0.5)  # (1 + 0 by zero_division) / 2
