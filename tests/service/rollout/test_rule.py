"""The rollout decision rule: Newcombe's interval against the paper's own figures, and the rule's
behaviour on counts hypothesis makes up."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from service.rollout.rule import Counts, judge, newcombe, wilson

Z95 = float(norm.ppf(0.975))


@pytest.mark.parametrize(
    ("counts", "published"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 at 95 %.
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_newcombe_matches_the_papers_table(counts, published) -> None:
    lower, upper = newcombe(*counts, Z95)
    assert (round(lower, 4), round(upper, 4)) == published


def test_wilson_matches_scipy() -> None:
    from scipy.stats import binomtest

    for k, n in [(0, 5), (3, 10), (81, 263), (20, 20)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n, Z95) == pytest.approx((ci.low, ci.high), abs=1e-12)


def _counts(tp: list[int], fp: list[int], images: int) -> Counts:
    c = Counts.zeros(len(tp))
    c.tp[:], c.fp[:], c.images = tp, fp, images
    return c


RULE = {"confidence": 0.95, "margin": 0.05, "min_feedback": 100}


def test_a_clearly_worse_candidate_is_rolled_back_before_min_feedback() -> None:
    current = _counts([48, 47], [2, 3], 100)
    candidate = _counts([2, 1], [9, 8], 20)  # 3 of 20 right
    verdict = judge(current, candidate, ["a", "b"], **RULE)
    assert verdict.action == "roll_back" and "overall" in verdict.reason


def test_one_worse_class_is_enough_to_roll_back() -> None:
    current = _counts([95, 95, 95], [5, 5, 5], 300)
    candidate = _counts([95, 95, 40], [5, 5, 60], 300)  # class c collapsed
    verdict = judge(current, candidate, ["a", "b", "c"], **RULE)
    assert verdict.action == "roll_back" and "class c" in verdict.reason


def test_an_equal_candidate_waits_for_min_feedback_then_for_every_class() -> None:
    labels = ["a", "b"]
    current = _counts([950, 950], [50, 50], 2000)
    assert judge(current, _counts([95, 95], [5, 5], 99), labels, **RULE).action == "wait"
    assert judge(current, _counts([950, 950], [50, 50], 2000), labels, **RULE).action == "promote"
    # a class the current version predicts and the candidate never did: no evidence, no promotion
    waiting = judge(current, _counts([950, 0], [50, 0], 2000), labels, **RULE)
    assert waiting.action == "wait" and "b" in waiting.reason


def test_a_loss_within_the_margin_is_not_rolled_back_however_sure() -> None:
    current = _counts([9_500, 9_500], [500, 500], 20_000)
    candidate = _counts([9_200, 9_500], [800, 500], 20_000)  # class a: 0.92 against 0.95
    verdict = judge(current, candidate, ["a", "b"], **RULE)  # margin 0.05
    assert verdict.action == "promote"
    assert judge(current, candidate, ["a", "b"], **{**RULE, "margin": 0.0}).action == "roll_back"


def test_classes_neither_version_predicts_do_not_block_promotion() -> None:
    current = _counts([950, 0], [50, 0], 1000)
    assert judge(current, _counts([950, 0], [50, 0], 1000), ["a", "b"], **RULE).action == "promote"
    nothing = _counts([0, 0], [0, 0], 1000)  # min_feedback images, none of them labelled
    assert judge(nothing, nothing, ["a", "b"], **RULE).action == "wait"


counts = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(current=counts, candidate=counts, extra=st.integers(1, 200))
def test_more_right_answers_never_turn_a_promotion_into_a_roll_back(current, candidate, extra):
    """Monotone in the candidate's evidence: adding true positives to one class of the candidate
    never makes the rule roll back where it did not, nor withdraws a promotion."""
    k = min(len(current), len(candidate))
    cur = _counts([t for t, _ in current[:k]], [f for _, f in current[:k]], 10_000)
    cand = _counts([t for t, _ in candidate[:k]], [f for _, f in candidate[:k]], 10_000)
    labels = [str(i) for i in range(k)]
    before = judge(cur, cand, labels, **RULE).action
    better = Counts(cand.tp.copy(), cand.fp.copy(), cand.fn.copy(), cand.images)
    better.tp[0] += extra
    after = judge(cur, better, labels, **RULE).action
    assert not (before != "roll_back" and after == "roll_back")
    if cur.tp[0] + cur.fp[0]:  # (a class only the candidate predicts waits for evidence)
        assert not (before == "promote" and after != "promote")


@settings(max_examples=200, deadline=None)
@given(tp=st.lists(st.integers(0, 300), min_size=1, max_size=4), data=st.data())
def test_identical_evidence_is_never_rolled_back(tp, data) -> None:
    fp = [data.draw(st.integers(0, 300)) for _ in tp]
    c = _counts(tp, fp, 1_000)
    assert judge(c, c, [str(i) for i in range(len(tp))], **RULE).action != "roll_back"


def test_counts_round_trip_and_refuse_another_shape() -> None:
    c = Counts.zeros(3)
    c.add((0, 2), 2)
    c.add((), 1)
    assert (c.tp.tolist(), c.fp.tolist(), c.fn.tolist(), c.images) == (
        [0, 0, 1],
        [1, 0, 0],
        [0, 1, 0],
        2,
    )
    back = Counts.from_json(c.to_json(), 3)
    assert back.to_json() == c.to_json()
    with pytest.raises(ValueError):
        Counts.from_json(c.to_json(), 4)
    rng = np.random.default_rng(0)
    assert (c + back).images == 4 and rng is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)
roles = st.fixed_dictionaries(
    {
        "tp": st.lists(st.integers(-1, 5), min_size=2, max_size=2) | json_values,
        "fp": st.lists(st.integers(0, 5), min_size=2, max_size=2),
        "fn": st.lists(st.integers(0, 5), min_size=2, max_size=2),
        "images": st.integers(-2, 9) | json_values,
    }
)
evidence_files = st.fixed_dictionaries(
    {
        "counts": st.fixed_dictionaries({"current": roles, "candidate": roles}) | json_values,
        "compared": st.integers(0, 9) | json_values,
        "agree_top1": st.integers(0, 9),
        "agree_labels": st.integers(0, 9),
    }
) | json_values


@settings(max_examples=400, deadline=None)
@given(data=evidence_files)
def test_another_process_evidence_file_is_evidence_or_refused_cleanly(data) -> None:
    """What the ledger reads from other processes (other releases, damaged files): evidence of
    the right shape, or one of the errors ``Rollouts.sync`` skips a file for."""
    from service.rollout.rollouts import BAD_EVIDENCE, Evidence

    try:
        e = Evidence.from_json(data, 2)
    except BAD_EVIDENCE:
        return
    for c in e.counts.values():
        assert c.tp.shape == (2,) and (c.tp >= 0).all() and c.images >= 0
