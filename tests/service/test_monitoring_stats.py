"""service.monitoring.stats and windows on their own, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.monitoring import stats
from service.monitoring.windows import AnsweredImages, DriftWindow, FeedbackWindow, outcomes


def test_clopper_pearson_lower_bounds_by_hand() -> None:
    # k = n: Beta(n, 1) has CDF x^n, so the bound is (1 - confidence)^(1/n).
    # k = 1, n = 2: Beta(1, 2) has CDF 1 - (1 - x)^2, so the bound is 1 - sqrt(confidence).
    # k = 0: nothing observed to succeed, the bound is 0; n = 0: no data, NaN.
    got = stats.clopper_pearson_lower(
        np.array([10, 59, 1, 0, 0]), np.array([10, 59, 2, 5, 0]), 0.95
    )
    assert got[0] == pytest.approx(0.05 ** (1 / 10), abs=1e-9)  # 0.7411
    assert got[1] == pytest.approx(
        0.05 ** (1 / 59), abs=1e-9
    )  # 0.9505: 59 clean images certify 0.95
    assert got[2] == pytest.approx(1 - math.sqrt(0.95), abs=1e-9)  # 0.0253
    assert got[3] == 0.0 and math.isnan(got[4])
    assert stats.clopper_pearson_lower(np.array([9]), np.array([9]), 0.90)[0] == pytest.approx(
        0.1 ** (1 / 9), abs=1e-9
    )


def test_clopper_pearson_upper_bounds_by_hand() -> None:
    # k = 0: Beta(1, n) has CDF 1 - (1 - x)^n, so the bound is 1 - (1 - confidence)^(1/n).
    # k = 1, n = 2: Beta(2, 1) has CDF x^2, so the bound is sqrt(confidence); k = n: 1.
    got = stats.clopper_pearson_upper(np.array([0, 1, 4, 0]), np.array([10, 2, 4, 0]), 0.95)
    assert got[0] == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-9)  # 0.2589
    assert got[1] == pytest.approx(math.sqrt(0.95), abs=1e-9)
    assert got[2] == 1.0 and math.isnan(got[3])


def test_ratio_is_nan_without_trials() -> None:
    got = stats.ratio(np.array([1, 0]), np.array([4, 0]))
    assert got[0] == 0.25 and math.isnan(got[1])


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert stats.psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert stats.psi(np.array([0.5, 0.5]), np.array([1, 3])) == pytest.approx(expected)  # counts
    assert stats.psi(np.array([0.2, 0.3, 0.5]), np.array([20, 30, 50])) == pytest.approx(0.0)
    # an empty bin counts as 1e-4: (0.5 - 1) ln(0.5 / 1) + (0.5 - 1e-4) ln(0.5 / 1e-4)
    floored = -0.5 * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert stats.psi(np.array([1.0, 0.0]), np.array([1, 1])) == pytest.approx(floored)
    with pytest.raises(ValueError):
        stats.psi(np.array([0.5, 0.5]), np.array([0, 0]))


def test_bin_indices_match_numpy_histogram_and_clip_outliers() -> None:
    edges = [0.0, 0.5, 1.0]
    values = [0.0, 0.49, 0.5, 1.0, 1.2, -0.1]
    assert stats.bin_indices(values, edges) == [0, 0, 1, 1, 1, 0]
    ten = np.linspace(0, 1, 11).tolist()
    inside = np.random.default_rng(0).random(1000).tolist() + [0.0, 0.3, 1.0]
    counts = np.bincount(stats.bin_indices(inside, ten), minlength=10)
    assert counts.tolist() == np.histogram(inside, ten)[0].tolist()


def test_answered_images_are_bounded_by_size_and_age() -> None:
    store = AnsweredImages(capacity=2, ttl_s=10)
    for i, nonce in enumerate("abc"):
        store.mark(nonce, {0}, float(i))
    assert len(store) == 2 and store.of("a", 2.0) == set()  # evicted: over capacity
    store.mark("b", {3}, 2.0)  # a second feedback of a request joins its first
    assert store.of("b", 11.0) == {0, 3}  # 10 s old: still kept
    assert store.of("b", 11.5) == set() and store.of("c", 11.5) == {0}
    assert store.of("c", 12.5) == set() and len(store) == 0


def test_outcomes_one_vs_rest() -> None:
    assert outcomes((1,), 1) == [(1, "tp")]
    assert outcomes((0, 2), 1) == [(0, "fp"), (2, "fp"), (1, "fn")]
    assert outcomes((), 2) == [(2, "fn")]


def test_feedback_window_counts_one_vs_rest_and_forgets() -> None:
    window = FeedbackWindow(classes=3, capacity=2, max_age_s=100)
    assert window.add(0.0, (0,), 0) == {0}  # true positive of 0
    assert window.add(1.0, (0, 2), 1) == {0, 1, 2}  # false positives of 0 and 2, missed 1
    assert (window.tp.tolist(), window.fp.tolist(), window.fn.tolist()) == (
        [1, 0, 0],
        [1, 0, 1],
        [0, 1, 0],
    )
    assert window.add(2.0, (), 2) == {0, 2}  # the first image leaves (capacity 2)
    assert (window.tp.tolist(), window.fp.tolist(), window.fn.tolist()) == (
        [0, 0, 0],
        [1, 0, 1],
        [0, 1, 1],
    )
    assert window.expire(101.5) == {0, 1, 2} and len(window) == 1
    assert window.fp.tolist() == [0, 0, 0] and window.fn.tolist() == [0, 0, 1]


def test_drift_window_counts_and_forgets() -> None:
    window = DriftWindow(classes=3, bins=2, capacity=3, max_age_s=5)
    window.add(0.0, [0, 0], [1, 1])
    window.add(1.0, [2, 1], [0, 1])
    assert window.labels == [1, 1, 1] and window.confidence == [1, 2] and len(window) == 3
    window.expire(5.5)  # the t=0 image left with capacity; none of t=1 is older than 5 s
    assert len(window) == 2
    window.expire(6.5)
    assert len(window) == 0 and window.labels == [0, 0, 0] and window.confidence == [0, 0]


@settings(max_examples=200, deadline=None)
@given(
    pair=st.integers(2, 12).flatmap(
        lambda k: st.tuples(
            st.lists(st.floats(0, 1e6), min_size=k, max_size=k).filter(lambda v: sum(v) > 0),
            st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda v: sum(v) > 0),
        )
    )
)
def test_psi_is_scipys_symmetric_relative_entropy(pair) -> None:
    """numpy's one line gives what scipy.special.rel_entr gives, empty bins included."""
    from scipy.special import rel_entr

    expected, observed = (np.asarray(v, dtype=np.float64) for v in pair)
    e = np.maximum(expected / expected.sum(), stats.PSI_FLOOR)
    o = np.maximum(observed / observed.sum(), stats.PSI_FLOOR)
    reference = float(np.sum(rel_entr(o, e) + rel_entr(e, o)))
    assert stats.psi(expected, observed) == pytest.approx(reference, rel=1e-9, abs=1e-12)
