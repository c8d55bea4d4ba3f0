"""When an exported artifact agrees with the Keras model it came from (TF-free).

Softmax outputs are compared element by element, as ``numpy.allclose`` does:
``|p_artifact - p_keras| <= atol + rtol * |p_keras|``. A float32 network's rounding differs
between runtimes (kernel order, fused multiply-adds, Winograd convolutions) by an amount that
grows with depth; after the softmax an error ``d`` in the logits moves each probability by about
``p * d``, so the difference is relative to the probability itself and ``rtol`` is the bound on
that logit error. ``atol`` covers probabilities too small for a relative bound. Besides, every
image's top-1 label must agree, except where Keras's two best probabilities are within twice the
default allowance of each other (a near-tie that rounding may order either way), whatever
tolerance was given. A conversion that drops or reorders a layer moves probabilities by orders
of magnitude more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-3


@dataclass(frozen=True)
class ParityTolerance:
    """How far an artifact's probabilities may be from Keras's: ``atol + rtol * |p_keras|``."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    def __post_init__(self) -> None:
        if not (self.atol >= 0 and self.rtol >= 0):
            raise ValueError(
                f"parity tolerances must be >= 0, not atol={self.atol} rtol={self.rtol}"
            )

    def allowed(self, expected: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(expected)


@dataclass(frozen=True)
class ParityResult:
    """One artifact against Keras on the check batch."""

    max_abs_diff: float
    excess: float  # max of |diff| / allowed: at most 1 passes
    top1_mismatches: int  # images whose top-1 label differs outside a near-tie
    top1_agreement: float  # share of images with the same top-1 label, near-ties included
    needed_rtol: float  # the smallest rtol (at this atol) that passes the element check

    @property
    def ok(self) -> bool:
        return self.excess <= 1.0 and self.top1_mismatches == 0


def compare(expected: np.ndarray, actual: np.ndarray, tol: ParityTolerance) -> ParityResult:
    """``actual`` (an artifact's probabilities) against ``expected`` (Keras's), per the module."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    diff = np.abs(actual - expected)
    if not np.isfinite(actual).all():
        diff = np.where(np.isfinite(actual), diff, np.inf)
    allowed = tol.allowed(expected)
    top = np.sort(expected, axis=1)
    margin = top[:, -1] - top[:, -2] if expected.shape[1] > 1 else np.full(len(expected), np.inf)
    # A near-tie is judged at float32 rounding's scale (the default tolerance), not the one
    # given: a loosened tolerance must not let clear answers change.
    tie = margin <= 2 * ParityTolerance().allowed(expected).max(axis=1)
    flipped = (expected.argmax(axis=1) != actual.argmax(axis=1)) & ~tie
    over = np.maximum(diff - tol.atol, 0.0) / np.maximum(np.abs(expected), 1e-30)
    return ParityResult(
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        excess=float((diff / np.maximum(allowed, 1e-300)).max()) if diff.size else 0.0,
        top1_mismatches=int(flipped.sum()),
        top1_agreement=float(np.mean(expected.argmax(axis=1) == actual.argmax(axis=1))),
        needed_rtol=float(over.max()) if over.size else 0.0,
    )


def round_up(value: float) -> float:
    """The next 1, 2 or 5 times a power of ten at or above ``value`` (a tolerance to suggest)."""
    if not value > 0 or not math.isfinite(value):
        return value
    power = 10.0 ** math.floor(math.log10(value))
    step = next(s for s in (1, 2, 5, 10) if s * power >= value * (1 - 1e-12))
    return float(f"{step * power:.0e}")
