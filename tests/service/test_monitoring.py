"""VersionMonitor: predictions recorded, feedback counted, gauges set to hand-computed values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from contract.metadata import ModelMetadata
from service.errors import FeedbackConflict, InvalidInput, UnknownRequest
from service.metrics import Metrics
from service.monitoring import VersionMonitor
from service.monitoring.receipts import Receipts
from service.settings import Settings
from service.types import Classification
from tests.helpers.models import LABELS, metadata

REFERENCE = {
    "split": "validation",
    "samples": 30,
    "label_distribution": {label: 1 / 3 for label in LABELS},
    "confidence": {"edges": [0.0, 0.5, 1.0], "fractions": [0.5, 0.5]},
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Live:
    """A VersionMonitor with its receipts, requests named by the test: ``record("r1", …)``
    keeps the receipt it issued, ``feedback("r1", …)`` reads it back."""

    def __init__(self, monitor: VersionMonitor, receipts: Receipts) -> None:
        self.monitor, self.receipts, self.ids = monitor, receipts, {}
        self.drift = monitor.drift

    def record(self, name: str, answer: Classification, served: np.ndarray) -> None:
        self.ids[name] = self.monitor.record(answer, served)

    def feedback(self, name: str, labels: object, index: int | None = None):
        return self.monitor.feedback(self.receipts.read(self.ids[name]), labels, index)


def _monitor(reference: dict | None = REFERENCE, **settings: object):
    meta = metadata("tiny", 1, "0" * 64)
    meta["thresholds"]["confidence"] = 0.95
    if reference is not None:
        meta["reference"] = reference
    registry = CollectorRegistry()
    config = {"drift_min_samples": 3, "drift_refresh_every": 1, **settings}
    clock = Clock()
    settings = Settings(models=Path("unused"), _env_file=None, **config)
    receipts = Receipts(["key"], settings.monitor_prediction_ttl_s, clock)
    monitor = VersionMonitor(
        ModelMetadata.model_validate(meta), Metrics(registry), settings, receipts, clock
    )
    return Live(monitor, receipts), registry, clock


def _answer(rows: list[list[float]], source: str = "calibrated", threshold: float = 0.5):
    probs = np.array(rows, np.float32)
    return Classification("tiny", 1, LABELS, probs, 1, np.full(3, threshold, np.float32), source)


SERVED = np.full(3, 0.5, np.float32)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"model": "tiny", "version": "1", **labels})


def test_precision_recall_and_their_bounds_by_hand() -> None:
    monitor, registry, _ = _monitor()
    monitor.record("r1", _answer([[0.9, 0.05, 0.05]]), SERVED)  # predicts top
    monitor.record("r2", _answer([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]]), SERVED)  # top; left
    assert monitor.feedback("r1", ["top"]).accepted == 1  # top: true positive
    assert monitor.feedback("r2", ["bottom", "left"]).accepted == 2  # top: FP, bottom: FN; left TP
    # top: precision 1/2, bound 1 - sqrt(0.95) (Beta(1, 2)); recall 1/1, bound 0.05 (Beta(1, 1))
    assert _value(registry, "visor_live_precision", label="top") == 0.5
    assert _value(registry, "visor_live_precision_lower_bound", label="top") == pytest.approx(
        1 - math.sqrt(0.95)
    )
    # upper bounds: precision 1/2 → sqrt(0.95) (Beta(2, 1)); recall 1/1 → 1
    assert _value(registry, "visor_live_precision_upper_bound", label="top") == pytest.approx(
        math.sqrt(0.95)
    )
    assert _value(registry, "visor_live_recall_upper_bound", label="top") == 1.0
    assert _value(registry, "visor_live_recall", label="top") == 1.0
    assert _value(registry, "visor_live_recall_lower_bound", label="top") == pytest.approx(0.05)
    assert _value(registry, "visor_live_support", label="top", metric="precision") == 2
    # bottom was never predicted: precision NaN; recall 0/1, bound 0
    assert math.isnan(_value(registry, "visor_live_precision", label="bottom"))
    assert _value(registry, "visor_live_recall", label="bottom") == 0.0
    assert _value(registry, "visor_live_recall_lower_bound", label="bottom") == 0.0
    assert _value(registry, "visor_live_feedback_total") == 3
    assert _value(registry, "visor_live_target", metric="precision") == 0.7
    assert _value(registry, "visor_live_target", metric="confidence") == 0.95


def test_drift_psi_by_hand() -> None:
    monitor, registry, _ = _monitor()
    monitor.record("r1", _answer([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]]), SERVED)
    assert math.isnan(_value(registry, "visor_drift_psi", kind="label"))  # 2 < 3 samples
    monitor.record("r2", _answer([[0.1, 0.2, 0.7]]), SERVED)
    # labels: served (2/3, 0 → 1e-4, 1/3) against (1/3, 1/3, 1/3)
    label_psi = (2 / 3 - 1 / 3) * math.log(2) + (1e-4 - 1 / 3) * math.log(1e-4 * 3)
    # confidence: all three top-1 scores in [0.5, 1]: (0 → 1e-4, 1) against (0.5, 0.5)
    conf_psi = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(1 / 0.5)
    assert _value(registry, "visor_drift_psi", kind="label") == pytest.approx(label_psi, rel=1e-4)
    assert _value(registry, "visor_drift_psi", kind="confidence") == pytest.approx(
        conf_psi, rel=1e-4
    )
    assert _value(registry, "visor_drift_samples") == 3


@pytest.mark.parametrize(
    "reference",
    [
        None,
        {**REFERENCE, "label_distribution": {"cat": 1.0}},  # no share for the model's labels
        {**REFERENCE, "confidence": {"edges": [0.0, 1.0, 0.5], "fractions": [0.5, 0.5]}},
    ],
)
def test_no_usable_reference_no_drift_gauge(reference: dict | None) -> None:
    monitor, registry, _ = _monitor(reference=reference)
    monitor.record("r1", _answer([[0.9, 0.05, 0.05]] * 4), SERVED)  # still serves and records
    assert monitor.drift is None and monitor.feedback("r1", ["top"] * 4).accepted == 4
    assert _value(registry, "visor_drift_psi", kind="label") is None
    assert _value(registry, "visor_drift_samples") is None


def test_live_metrics_count_at_the_served_thresholds() -> None:
    monitor, registry, _ = _monitor()
    # the request asked for threshold 0.95 (no label); the served 0.5 would have said "top"
    monitor.record("r1", _answer([[0.9, 0.05, 0.05]], "request", 0.95), SERVED)
    monitor.feedback("r1", ["bottom"])
    assert _value(registry, "visor_live_precision", label="top") == 0.0


def test_feedback_by_index_null_labels_conflicts_and_bad_input() -> None:
    monitor, registry, _ = _monitor()
    monitor.record("r1", _answer([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]), SERVED)
    for labels, index, words in (
        (["top"], None, "1 labels for a request of 2"),
        (["cat", "top"], None, "'cat' (image 0) is not one of the model's labels"),
        ([None, None], None, "holds no label"),
        ("top", None, "must be a list"),
        (["top"], 2, "index"),
        (["top", "left"], 0, "exactly one label"),
    ):
        with pytest.raises(InvalidInput, match=re.escape(words)):
            monitor.feedback("r1", labels, index)
    assert _value(registry, "visor_live_feedback_total") == 0.0  # nothing half-counted
    assert monitor.feedback("r1", [None, 1]).accepted == 1  # an index for a label works too
    assert monitor.feedback("r1", ["top"], index=0).accepted == 1
    with pytest.raises(FeedbackConflict, match=re.escape("image(s) [0, 1] of this request")):
        monitor.feedback("r1", ["top", "bottom"])
    assert _value(registry, "visor_live_feedback_total") == 2.0
    assert _value(registry, "visor_live_precision", label="bottom") == 1.0


def test_expired_requests_and_feedback_leave_the_windows() -> None:
    monitor, registry, clock = _monitor(monitor_prediction_ttl_s=60, live_window_s=120)
    monitor.record("old", _answer([[0.9, 0.05, 0.05]]), SERVED)
    monitor.record("kept", _answer([[0.9, 0.05, 0.05]]), SERVED)
    monitor.feedback("kept", ["bottom"])
    assert _value(registry, "visor_live_precision", label="top") == 0.0
    clock.now = 61.0
    with pytest.raises(UnknownRequest, match="expired"):  # past the receipt's TTL
        monitor.feedback("old", ["top"])
    clock.now = 121.0
    monitor.record("new", _answer([[0.9, 0.05, 0.05]]), SERVED)
    monitor.feedback("new", ["top"])  # the t=0 feedback left the 120 s window
    assert _value(registry, "visor_live_precision", label="top") == 1.0
    assert math.isnan(_value(registry, "visor_live_recall", label="bottom"))  # its only image left
