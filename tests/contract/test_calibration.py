"""contract.calibration: Clopper-Pearson bounds, the threshold rule, and whether its promise holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta
from sklearn.metrics import precision_recall_curve

from contract.calibration import choose, curve_counts, lower_bound, needed_trials


def test_lower_bound_matches_the_closed_form_and_the_59_rule() -> None:
    # k = n: the bound is (1 - confidence) ** (1 / n); 59 clean predictions certify 0.95.
    n = np.arange(1, 200)
    np.testing.assert_allclose(lower_bound(n, n, 0.95), 0.05 ** (1 / n), rtol=1e-9)
    assert lower_bound(np.array(59), np.array(59), 0.95) >= 0.95
    assert lower_bound(np.array(58), np.array(58), 0.95) < 0.95
    assert lower_bound(np.array(0), np.array(10), 0.95) == 0.0
    assert needed_trials(1.0, 0.95, 0.95) == 59
    assert needed_trials(0.94, 0.95, 0.95) is None  # the observed rate is below the target


def test_curve_counts_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    positive = rng.random(400) < 0.3
    scores = np.round(rng.random(400), 2)  # ties on purpose
    counts = curve_counts(positive, scores)
    precision, recall, thresholds = precision_recall_curve(positive, scores)
    np.testing.assert_allclose(counts.thresholds, thresholds)
    np.testing.assert_allclose(counts.precision, precision[:-1])
    np.testing.assert_allclose(counts.recall, recall[:-1])
    for t, tp, predicted in zip(counts.thresholds, counts.tp, counts.predicted, strict=True):
        assert predicted == (scores >= t).sum() and tp == (positive & (scores >= t)).sum()


@st.composite
def scored(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(20, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    separation = draw(st.floats(0.0, 4.0))
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < draw(st.floats(0.05, 0.9))
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + separation * positive)))
    return positive, np.round(scores, draw(st.integers(2, 6)))


@settings(max_examples=150, deadline=None)
@given(data=scored(), policy=st.sampled_from(["precision", "recall"]), target=st.floats(0.5, 0.99))
def test_a_certified_threshold_meets_the_target_on_its_own_data(data, policy, target) -> None:
    positive, scores = data
    counts = curve_counts(positive, scores)
    choice = choose(counts, policy, target, 0.95)
    threshold = counts.thresholds[choice.index]
    predicted = scores >= threshold
    tp = int((predicted & positive).sum())
    trials = int(predicted.sum()) if policy == "precision" else int(positive.sum())
    bound = float(lower_bound(np.array(tp), np.array(trials), 0.95))
    assert bound == pytest.approx(choice.lower_bound) and trials == choice.support
    bounds = lower_bound(*counts.metric(policy), 0.95)
    assert choice.certified == bool((bounds >= target).any())
    assert choice.best_certified == pytest.approx(bounds.max())
    if choice.certified:
        assert bound >= target
        # no certified threshold keeps more recall (precision target) / precision (recall target)
        other = counts.recall if policy == "precision" else counts.precision
        assert other[choice.index] == pytest.approx(other[bounds >= target].max())
        assert choice.needed is None
    else:
        assert choice.lower_bound == pytest.approx(bounds.max())


POSITIVE, NEGATIVE, PRIOR = (4.0, 1.5), (1.5, 4.0), 0.3


def _true_precision(threshold: float) -> float:
    """Exact precision of ``score >= threshold`` under the known score distributions."""
    tp = PRIOR * beta.sf(threshold, *POSITIVE)
    fp = (1 - PRIOR) * beta.sf(threshold, *NEGATIVE)
    return tp / (tp + fp) if tp + fp > 0 else 1.0


def _coverage(rule, runs: int = 300, n: int = 400, target: float = 0.9) -> tuple[float, int]:
    """Of the runs the rule certified, the share whose threshold truly reaches ``target``."""
    rng = np.random.default_rng(11)
    held = certified = 0
    for _ in range(runs):
        positive = rng.random(n) < PRIOR
        scores = np.where(positive, rng.beta(*POSITIVE, size=n), rng.beta(*NEGATIVE, size=n))
        counts = curve_counts(positive, scores)
        index = rule(counts, target)
        if index is None:
            continue
        certified += 1
        held += _true_precision(counts.thresholds[index]) >= target
    return held / max(certified, 1), certified


def _certified_rule(counts, target: float) -> int | None:
    choice = choose(counts, "precision", target, 0.95)
    return choice.index if choice.certified else None


def _point_estimate_rule(counts, target: float) -> int | None:
    """The rule before certification: the lowest threshold whose point precision reaches it."""
    ok = np.flatnonzero(counts.precision >= target)
    return int(ok[0]) if ok.size else None


def test_certified_precision_holds_on_the_true_distribution_at_about_the_confidence() -> None:
    coverage, certified = _coverage(_certified_rule)
    assert certified >= 250  # the rule does certify with this much data
    # NOTE: 0.95 per threshold; picking the most recall among certified ones costs a little.
    assert coverage >= 0.9
    old_coverage, _ = _coverage(_point_estimate_rule)
    assert old_coverage < 0.6  # the point-estimate rule keeps its promise about half the time


def test_an_uncertified_class_says_how_many_images_would_certify_it() -> None:
    positive = np.r_[np.ones(30, bool), np.zeros(300, bool)]
    scores = np.r_[np.full(30, 0.9), np.linspace(0.0, 0.5, 300)]  # perfectly separated
    choice = choose(curve_counts(positive, scores), "precision", 0.95, 0.95)
    assert not choice.certified and choice.lower_bound == pytest.approx(0.05 ** (1 / 30))
    assert choice.needed == 59  # no error observed: 59 images of the class certify 0.95
    recall = choose(curve_counts(positive, scores), "recall", 0.9, 0.95)
    assert recall.certified and recall.lower_bound >= 0.9
