"""One model version's live verification: sign what each request was answered with, take
feedback, publish rolling precision/recall (with Clopper-Pearson bounds) and drift (PSI).

Two views. Counters (``visor_live_outcomes``, ``visor_drift_served``) count every feedback
image's outcome and every served image's bucket: summed over replicas and workers by Prometheus,
they give the fleet's precision, recall and drift (deploy/prometheus/fleet.yml). Gauges hold this
process's rolling window with exact bounds.

Cost on the request path: one signature per request and one window append per image; the drift
gauges are recomputed every ``drift_refresh_every`` served images, not per request, because a
scrape under BentoML reads gauges from the workers' multiprocess files and cannot call back into
a worker. Precision/recall are recomputed on each feedback call, for the classes it touched only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from contract.metadata import ModelMetadata, Reference
from service.errors import FeedbackConflict, InvalidInput
from service.metrics import Metrics
from service.monitoring import stats
from service.monitoring.receipts import Receipt, Receipts
from service.monitoring.windows import AnsweredImages, DriftWindow, FeedbackWindow, outcomes
from service.settings import Settings
from service.types import Classification

log = logging.getLogger(__name__)


def _usable(meta: ModelMetadata) -> Reference | None:
    """The version's drift reference, or None (logged) when it cannot be compared with."""
    ref = meta.reference
    if ref is None:
        return None
    shares = sum(ref.label_distribution.get(label, 0.0) for label in meta.labels)
    edges = ref.confidence.edges
    if shares <= 0 or sum(ref.confidence.fractions) <= 0 or edges != sorted(edges):
        log.warning(
            "%s v%d: metadata.reference is empty or its edges are unsorted: no drift gauges",
            meta.name,
            meta.version,
        )
        return None
    return ref


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    model: str
    version: int
    accepted: int  # images whose ground truth was recorded
    truths: dict[int, int] = field(default_factory=dict)  # image index → true class index


class VersionMonitor:
    """Predictions, feedback and drift of one served model version; used on the event loop."""

    def __init__(
        self,
        meta: ModelMetadata,
        metrics: Metrics,
        settings: Settings,
        receipts: Receipts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.version = meta.name, meta.version
        self.labels = list(meta.labels)
        self._index = {label: i for i, label in enumerate(self.labels)}
        self._m = metrics
        self._key = (meta.name, str(meta.version))
        self._clock = clock
        self.confidence = meta.thresholds.bound_confidence
        self._receipts = receipts
        self.answered = AnsweredImages(
            settings.monitor_predictions, settings.monitor_prediction_ttl_s
        )
        self.feedback_window = FeedbackWindow(
            len(self.labels), settings.live_window, settings.live_window_s
        )
        self._feedback_count = metrics.live_feedback.labels(*self._key)
        self._outcomes = {
            (c, outcome): metrics.live_outcomes.labels(*self._key, label, outcome)
            for c, label in enumerate(self.labels)
            for outcome in ("tp", "fp", "fn")
        }
        self._set_targets(meta)
        self.drift: DriftWindow | None = None
        ref = _usable(meta)
        if ref is not None:  # No reference, no drift gauge: there is nothing to compare with
            self._ref_labels = np.array([ref.label_distribution.get(x, 0.0) for x in self.labels])
            self._ref_conf = np.asarray(ref.confidence.fractions, np.float64)
            self._edges = list(ref.confidence.edges)
            self.drift = DriftWindow(
                len(self.labels),
                len(self._ref_conf),
                settings.drift_window,
                settings.drift_window_s,
            )
            self._served = self._buckets(metrics, ref)
            # Counted here, added to the counters with each drift refresh: a counter increment
            # per bucket per request would cost more than the rest of record().
            self._pending = ([0] * len(self.labels), [0] * len(self._ref_conf))
        self._min_samples = settings.drift_min_samples
        self._refresh_every = settings.drift_refresh_every
        self._unrefreshed = 0

    def _buckets(self, metrics: Metrics, ref: Reference) -> tuple[list, list]:
        """The served-image counters of each label and confidence bin, created at 0 (an empty
        bucket must be summed as 0, not be missing), with their reference shares beside."""
        edges = ref.confidence.edges
        names = {
            "label": self.labels,
            "confidence": [f"{lo:g}-{hi:g}" for lo, hi in pairwise(edges)],
        }
        shares = {"label": self._ref_labels, "confidence": self._ref_conf}
        served: dict[str, list] = {}
        for kind, buckets in names.items():
            served[kind] = [metrics.drift_served.labels(*self._key, kind, b) for b in buckets]
            total = shares[kind].sum()
            for b, share in zip(buckets, shares[kind], strict=True):
                metrics.drift_reference.labels(*self._key, kind, b).set(share / total)
        return served["label"], served["confidence"]

    def _set_targets(self, meta: ModelMetadata) -> None:
        t = meta.thresholds
        self.policy, self.target = t.policy, t.target
        if t.policy in ("precision", "recall") and t.target is not None:
            self._m.live_target.labels(*self._key, t.policy).set(t.target)
        self._m.live_target.labels(*self._key, "confidence").set(self.confidence)

    # --- request path ----------------------------------------------------------------------
    def record(self, result: Classification, served: np.ndarray) -> str:
        """The request id of ``result``: a receipt of its labels at the ``served`` (calibrated)
        thresholds, which is all its feedback will need."""
        now = self._clock()
        probs = result.probabilities
        # Live precision is about the served thresholds: a request that asked for its own
        # still counts with what the calibrated thresholds would have answered.
        hits = result.hits if result.threshold_source == "calibrated" else probs >= served
        predicted: list[list[int]] = [[] for _ in range(len(probs))]
        rows, cols = np.nonzero(hits)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            predicted[r].append(c)
        if self.drift is not None:
            top1 = probs.argmax(axis=1).tolist()
            bins = stats.bin_indices(probs.max(axis=1).tolist(), self._edges)
            self.drift.add(now, top1, bins)
            for pending, buckets in zip(self._pending, (top1, bins), strict=True):
                for b in buckets:
                    pending[b] += 1
            self._unrefreshed += len(probs)
            if self._unrefreshed >= self._refresh_every:
                self.refresh_drift()
        return self._receipts.issue(self.name, self.version, predicted)

    def refresh_drift(self) -> None:
        """Recompute the PSI gauges over the drift window (NaN while it holds too few images)."""
        if self.drift is None:
            return
        self._unrefreshed = 0
        for counters, pending in zip(self._served, self._pending, strict=True):
            for b, n in enumerate(pending):
                if n:
                    counters[b].inc(n)
                    pending[b] = 0
        samples, label_psi, conf_psi = self._psi(self._clock())
        self._m.drift_samples.labels(*self._key).set(samples)
        self._m.drift_psi.labels(*self._key, "label").set(label_psi)
        self._m.drift_psi.labels(*self._key, "confidence").set(conf_psi)

    def _psi(self, now: float) -> tuple[int, float, float]:
        """Images in the drift window, and its label and confidence PSI (NaN: too few)."""
        assert self.drift is not None
        self.drift.expire(now)
        samples = len(self.drift)
        if samples < self._min_samples:
            return samples, math.nan, math.nan
        return (
            samples,
            stats.psi(self._ref_labels, np.asarray(self.drift.labels)),
            stats.psi(self._ref_conf, np.asarray(self.drift.confidence)),
        )

    def snapshot(self) -> dict[str, Any]:
        """What the gauges say, as one JSON-ready dict: the feedback window's per-class
        precision and recall with their bounds and support, the target, and the drift."""
        now = self._clock()
        self._publish(sorted(self.feedback_window.expire(now)))
        w = self.feedback_window
        per_class = [
            {"label": label, "tp": int(w.tp[c]), "fp": int(w.fp[c]), "fn": int(w.fn[c])}
            for c, label in enumerate(self.labels)
        ]
        for metric, (trials, point, lower, upper) in self._estimates(w.tp, w.fp, w.fn).items():
            for c, row in enumerate(per_class):
                n = int(trials[c])
                row[metric] = {
                    "value": float(point[c]) if n else None,
                    "lower_bound": float(lower[c]) if n else None,
                    "upper_bound": float(upper[c]) if n else None,
                    "support": n,
                }
        return {
            "feedback": len(w),
            "policy": self.policy,
            "target": self.target,
            "confidence": self.confidence,
            "per_class": per_class,
            "drift": self._drift_snapshot(now),
        }

    def _drift_snapshot(self, now: float) -> dict[str, Any] | None:
        if self.drift is None:
            return None
        samples, label_psi, conf_psi = self._psi(now)
        return {
            "samples": samples,
            "min_samples": self._min_samples,
            "label_psi": None if math.isnan(label_psi) else label_psi,
            "confidence_psi": None if math.isnan(conf_psi) else conf_psi,
        }

    # --- feedback --------------------------------------------------------------------------
    def feedback(
        self, receipt: Receipt, labels: Sequence[str | int | None], index: int | None = None
    ) -> FeedbackResult:
        """Record ground truth for a request this version answered (its ``receipt``).
        ``labels``: one per image (None: unknown), or one for ``index``."""
        now = self._clock()
        truths = self._truths(receipt, labels, index)
        answered = self.answered.of(receipt.nonce, now)
        done = sorted(j for j in truths if j in answered)
        if done:
            raise FeedbackConflict(
                f"Feedback for image(s) {done} of this request was already recorded; "
                "each image counts once."
            )
        touched: set[int] = set()
        for j, truth in truths.items():
            predicted = receipt.predicted[j]
            touched |= self.feedback_window.add(now, predicted, truth)
            for found in outcomes(predicted, truth):
                self._outcomes[found].inc()
        self.answered.mark(receipt.nonce, set(truths), now)
        self._feedback_count.inc(len(truths))
        self._publish(sorted(touched))
        return FeedbackResult(self.name, self.version, len(truths), truths)

    def _truths(
        self, receipt: Receipt, labels: Sequence[str | int | None], index: int | None
    ) -> dict[int, int]:
        """image index → true class index, validated (InvalidInput) before anything is counted."""
        n = len(receipt.predicted)
        if isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
            raise InvalidInput("'labels' must be a list: one true label per image of the request.")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise InvalidInput(f"'index' must be an image index in [0, {n}), got {index!r}.")
            if len(labels) != 1:
                raise InvalidInput("With 'index', give exactly one label: that image's.")
            positions = [index]
        elif len(labels) != n:
            raise InvalidInput(
                f"{len(labels)} labels for a request of {n} image(s): give one per image "
                "(null for an unknown one), or 'index' and one label."
            )
        else:
            positions = list(range(n))
        truths = {j: self._class(label, j) for j, label in zip(positions, labels, strict=True)}
        truths = {j: c for j, c in truths.items() if c is not None}
        if not truths:
            raise InvalidInput("The feedback holds no label: every entry is null.")
        return truths

    def _class(self, label: str | int | None, image: int) -> int | None:
        if label is None or label == "":
            return None
        if isinstance(label, str) and label in self._index:
            return self._index[label]
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(self.labels):
            return label
        raise InvalidInput(
            f"Label {label!r} (image {image}) is not one of the model's labels: "
            f"{', '.join(self.labels[:20])}{' ...' if len(self.labels) > 20 else ''}."
        )

    def _publish(self, classes: list[int]) -> None:
        """Set the precision/recall gauges of ``classes`` from the feedback window's counts."""
        if not classes:
            return
        w, idx, m = self.feedback_window, np.asarray(classes), self._m
        gauges = {
            "precision": (m.live_precision, m.live_precision_lower, m.live_precision_upper),
            "recall": (m.live_recall, m.live_recall_lower, m.live_recall_upper),
        }
        estimates = self._estimates(w.tp[idx], w.fp[idx], w.fn[idx])
        for metric, (trials, *values) in estimates.items():
            for j, c in enumerate(classes):
                key = (*self._key, self.labels[c])
                for gauge, value in zip(gauges[metric], values, strict=True):
                    gauge.labels(*key).set(value[j])
                m.live_support.labels(*key, metric).set(trials[j])

    def _estimates(
        self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per metric: (support, point estimate, lower bound, upper bound) of each class."""
        out = {}
        for metric, trials in (("precision", tp + fp), ("recall", tp + fn)):
            out[metric] = (
                trials,
                stats.ratio(tp, trials),
                stats.clopper_pearson_lower(tp, trials, self.confidence),
                stats.clopper_pearson_upper(tp, trials, self.confidence),
            )
        return out
