"""The parity rule (TF-free): relative to each probability, top-1 kept outside near-ties."""

from __future__ import annotations

import numpy as np
import pytest

from training.parity import ParityTolerance, compare, round_up

DEFAULT = ParityTolerance()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_float32_rounding_of_a_deep_net_passes_and_a_wrong_layer_fails() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (32, 10))
    keras_p = _softmax(logits)
    # float32 rounding across ~50 layers: a relative logit error of a few 1e-5
    rounded = _softmax(logits * (1 + rng.normal(0, 3e-5, logits.shape)))
    result = compare(keras_p, rounded.astype(np.float32), DEFAULT)
    assert result.ok and result.top1_agreement == 1.0
    assert result.max_abs_diff > 1e-5  # the old absolute 1e-5 would have refused this export
    # a conversion that lost a layer (a bias, say) moves the probabilities by far more
    broken = _softmax(logits + rng.normal(0, 0.5, 10))
    assert not compare(keras_p, broken, DEFAULT).ok


def test_the_allowance_is_relative_to_each_probability() -> None:
    expected = np.array([[0.9, 0.09, 0.01]])
    tol = ParityTolerance(atol=1e-6, rtol=1e-3)
    assert compare(expected, expected + [[-8e-4, 8e-5, 0.9e-5]], tol).ok
    small_moved = compare(expected, expected + [[0.0, 0.0, 2e-5]], tol)
    assert not small_moved.ok  # 2e-5 is within 1e-3 of 0.9 but not of 0.01
    assert small_moved.needed_rtol == pytest.approx(1.9e-3)
    assert round_up(small_moved.needed_rtol) == 2e-3
    assert compare(expected, expected + [[0.0, 0.0, 2e-5]], ParityTolerance(1e-6, 2e-3)).ok


def test_top1_must_agree_unless_the_two_best_are_within_the_tolerance() -> None:
    clear = np.array([[0.6, 0.4]])
    assert compare(clear, np.array([[0.4, 0.6]]), ParityTolerance(1.0, 0.0)).top1_mismatches == 1
    tie = np.array([[0.5000004, 0.4999996]])
    swapped = compare(tie, tie[:, ::-1], DEFAULT)
    assert swapped.ok and swapped.top1_mismatches == 0 and swapped.top1_agreement == 0.0


def test_nan_or_inf_outputs_fail() -> None:
    expected = np.array([[0.7, 0.3]])
    assert not compare(expected, np.array([[np.nan, 0.3]]), DEFAULT).ok
    assert not compare(expected, np.array([[np.inf, 0.3]]), DEFAULT).ok


@pytest.mark.parametrize(
    ("value", "step"), [(1.1e-5, 2e-5), (3e-3, 5e-3), (1e-3, 1e-3), (6e-3, 1e-2)]
)
def test_round_up_to_a_1_2_5_step(value: float, step: float) -> None:
    assert round_up(value) == pytest.approx(step)
