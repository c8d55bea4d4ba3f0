"""Classification's lazily built outputs: thresholded labels and top-k, against a plain oracle."""

import numpy as np
import pytest

from service.types import Classification


def _classification(probs: np.ndarray, thresholds: np.ndarray, k: int = 3) -> Classification:
    labels = [f"c{i}" for i in range(probs.shape[1])]
    return Classification(
        model="m",
        version=1,
        labels=labels,
        probabilities=probs.astype(np.float32),
        k=k,
        thresholds=thresholds.astype(np.float32),
        threshold_source="request",
    )


def _oracle(result: Classification) -> list[list[str]]:
    """Every class at or over its threshold, best first, ties in label order (a stable sort)."""
    out = []
    for row in result.probabilities:
        hits = [i for i in range(len(row)) if row[i] >= result.thresholds[i]]
        out.append([result.labels[i] for i in sorted(hits, key=lambda i: -row[i])])
    return out


def test_predicted_orders_hits_by_probability_and_ties_by_label() -> None:
    probs = np.array(
        [
            [0.1, 0.5, 0.2, 0.2],  # one hit
            [0.25, 0.25, 0.25, 0.25],  # a four-way tie: label order
            [0.05, 0.05, 0.1, 0.8],  # 0.8 is under c3's 0.9: no hit
            [0.3, 0.1, 0.35, 0.25],  # three hits, not in label order
        ]
    )
    thresholds = np.array([0.2, 0.2, 0.2, 0.9])
    result = _classification(probs, thresholds)
    assert result.predicted == [["c1", "c2"], ["c0", "c1", "c2"], [], ["c2", "c0"]]
    np.testing.assert_array_equal(result.hits, probs.astype(np.float32) >= thresholds)


@pytest.mark.parametrize("seed", range(5))
def test_predicted_matches_the_oracle_on_random_batches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # NOTE: values on a coarse grid so ties and values equal to a threshold both occur
    probs = rng.integers(0, 5, size=(16, 7)) / 4
    thresholds = rng.integers(0, 5, size=7) / 4
    result = _classification(probs, thresholds)
    assert result.predicted == _oracle(result)


def test_top_k_lists_the_k_best_with_ties_in_label_order() -> None:
    result = _classification(np.array([[0.2, 0.4, 0.4, 0.0]]), np.full(4, 0.5), k=3)
    assert [(c.label, c.index) for c in result.top_k[0]] == [("c1", 1), ("c2", 2), ("c0", 0)]
    assert result.predicted == [[]]
