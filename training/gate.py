"""The publish gate: a model no better than chance is refused before anything is exported."""

from __future__ import annotations

import numpy as np

from contract.metadata import TestMetrics
from training.errors import TrainingError


class PublishRefused(TrainingError):
    """The model does not clear --min-test-accuracy; nothing was published."""


def chance_accuracy(y_test: np.ndarray, num_classes: int) -> float:
    """What always predicting the test split's most frequent label scores (1/C when balanced)."""
    return float(np.bincount(y_test, minlength=num_classes).max() / max(len(y_test), 1))


def default_min_accuracy(chance: float) -> float:
    """1.5x chance, at least chance + 0.1, at most halfway from chance to 1.

    NOTE: 1.5x keeps many-class problems reachable (100 classes: 0.11 with the +0.1 floor), the
    +0.1 floor separates few-class models from a constant answer by more than test-split noise,
    and the halfway cap keeps an imbalanced split's bar below 1 (binary 90/10: 0.95).
    """
    return min(max(1.5 * chance, chance + 0.1), (1.0 + chance) / 2)


def check_publishable(
    metrics: TestMetrics, y_test: np.ndarray, num_classes: int, minimum: float | None
) -> float:
    """The bar that was applied; raises PublishRefused when the test accuracy is below it."""
    chance = chance_accuracy(y_test, num_classes)
    bar = default_min_accuracy(chance) if minimum is None else minimum
    if metrics.accuracy < bar:
        how = "the default for this split" if minimum is None else "--min-test-accuracy"
        raise PublishRefused(
            f"refusing to publish: test accuracy {metrics.accuracy:.4f} on {metrics.samples} "
            f"images is below {bar:.4f} ({how}; always answering the most frequent label scores "
            f"{chance:.4f}). Nothing was published. Train longer or on more data, check the "
            "labels, or pass --min-test-accuracy 0 to publish anyway."
        )
    return bar
