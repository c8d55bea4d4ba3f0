"""Per-request re-targeting applies training's certified rule to the counts in metadata.json."""

from __future__ import annotations

import numpy as np
import pytest

from contract.calibration import choose, curve_counts
from contract.metadata import ModelMetadata
from service.postprocess import Postprocessor
from service.types import InferOptions
from tests.helpers.models import metadata
from training.calibrate import calibrate

LABELS = ["top", "bottom", "left"]


def _meta_with_counts() -> tuple[ModelMetadata, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 900)
    logits = rng.normal(size=(900, 3)) + 4.0 * (y[:, None] == np.arange(3))
    probs = 1 / (1 + np.exp(-logits))
    probs[:, 2] = rng.random(900)  # "left" is noise: never certified
    thresholds = calibrate(y, probs, LABELS, "precision", 0.9, confidence=0.95)
    raw = metadata("tiny", 1, "0" * 64)
    raw["thresholds"] = thresholds.model_dump(mode="json")
    return ModelMetadata.model_validate(raw), y, probs


def test_the_calibrated_thresholds_carry_their_certification() -> None:
    meta, _, _ = _meta_with_counts()
    post = Postprocessor(meta, default_top_k=1)
    thresholds, source, certified = post.decision(InferOptions())
    assert source == "calibrated"
    assert certified.tolist() == [c.certified for c in meta.thresholds.per_class]
    assert certified.tolist() == [True, True, False]
    np.testing.assert_allclose(thresholds, [c.threshold for c in meta.thresholds.per_class])


@pytest.mark.parametrize(
    ("metric", "target"), [("precision", 0.8), ("precision", 0.97), ("recall", 0.9)]
)
def test_retargeting_uses_the_rule_training_uses(metric: str, target: float) -> None:
    meta, y, probs = _meta_with_counts()
    post = Postprocessor(meta, default_top_k=1)
    option = {"target_precision" if metric == "precision" else "target_recall": target}
    thresholds, source, certified = post.decision(InferOptions(**option))
    assert source == f"target_{metric}={target:g}"
    for c in range(3):
        # NOTE: the stored curve is thinned; training's full curve chooses among more points
        counts = curve_counts(y == c, probs[:, c])
        choice = choose(counts, metric, target, 0.95)
        assert certified[c] == choice.certified
        if choice.certified:
            predicted = probs[:, c] >= thresholds[c]
            tp = int((predicted & (y == c)).sum())
            trials = int(predicted.sum()) if metric == "precision" else int((y == c).sum())
            assert tp / trials >= target  # and its bound, checked in test_calibration


def test_retargeting_to_the_calibrated_target_gives_the_calibrated_thresholds() -> None:
    meta, _, _ = _meta_with_counts()
    post = Postprocessor(meta, 1)
    calibrated = post.decision(InferOptions())
    again = post.decision(InferOptions(target_precision=0.9))
    np.testing.assert_array_equal(again[0], calibrated[0])
    np.testing.assert_array_equal(again[2], calibrated[2])


def test_explicit_thresholds_have_no_target_to_certify() -> None:
    meta, _, _ = _meta_with_counts()
    _, source, certified = Postprocessor(meta, 1).decision(InferOptions(threshold=0.3))
    assert source == "request" and certified is None


def test_curves_without_counts_are_never_certified() -> None:
    meta = ModelMetadata.model_validate(metadata("tiny", 1, "0" * 64))
    _, _, certified = Postprocessor(meta, 1).decision(InferOptions(target_precision=0.6))
    assert certified.tolist() == [False, False, False]
