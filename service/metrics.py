"""Prometheus collectors of the engine (names prefixed ``visor_``).

Built on first use, not at import: tests and several engines in one process each pass their own
``CollectorRegistry``; the default registry gets one shared ``Metrics`` (``Metrics.shared()``).
"""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every collector the engine updates; one instance per registry."""

    _shared: ClassVar[dict[int, Metrics]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        mv = ["model", "version"]
        self.requests = Counter(
            "visor_requests",
            "Inference requests by outcome.",
            [*mv, "protocol", "code"],
            registry=registry,
        )
        self.failures = Counter(
            "visor_request_failures",
            "Inference requests that failed, by error code.",
            [*mv, "protocol", "code"],
            registry=registry,
        )
        self.images = Counter("visor_images", "Images classified.", mv, registry=registry)
        self.queue_time = Histogram(
            "visor_queue_seconds",
            "Time a request waited in the batcher's queue.",
            mv,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_time = Histogram(
            "visor_inference_seconds",
            "Backend time of one batch.",
            mv,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "visor_batch_size",
            "Images per batch sent to the backend.",
            mv,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "visor_queue_depth",
            "Images waiting in the batcher's queue.",
            mv,
            registry=registry,
        )
        self.provider = Gauge(
            "visor_execution_provider",
            "1 for the provider/device actually active per version.",
            [*mv, "provider"],
            registry=registry,
        )
        self.model_ready = Gauge(
            "visor_model_ready",
            "1 when the version serves requests, else 0.",
            mv,
            registry=registry,
        )
        self.load_failures = Counter(
            "visor_model_load_failures",
            "Versions that failed to load or verify.",
            mv,
            registry=registry,
        )
        self.predicted = Counter(
            "visor_predicted_labels",
            "Thresholded labels predicted, by label.",
            ["model", "version", "label"],
            registry=registry,
        )
        self._live(registry)
        self._rollout(registry)

    def _live(self, registry: CollectorRegistry) -> None:
        """Live verification (service/monitoring): feedback-based precision/recall and drift."""
        mv, mvl = ["model", "version"], ["model", "version", "label"]
        # NaN where an estimate has no data yet; every gauge is per worker process (the
        # `pid` label under BentoML's multiprocess mode): aggregate with min/max by (...).
        self.live_precision = Gauge(
            "visor_live_precision",
            "Precision at the served thresholds over the feedback window.",
            mvl,
            registry=registry,
        )
        self.live_precision_lower = Gauge(
            "visor_live_precision_lower_bound",
            "One-sided Clopper-Pearson lower bound of visor_live_precision.",
            mvl,
            registry=registry,
        )
        self.live_precision_upper = Gauge(
            "visor_live_precision_upper_bound",
            "One-sided Clopper-Pearson upper bound of visor_live_precision.",
            mvl,
            registry=registry,
        )
        self.live_recall = Gauge(
            "visor_live_recall",
            "Recall at the served thresholds over the feedback window.",
            mvl,
            registry=registry,
        )
        self.live_recall_lower = Gauge(
            "visor_live_recall_lower_bound",
            "One-sided Clopper-Pearson lower bound of visor_live_recall.",
            mvl,
            registry=registry,
        )
        self.live_recall_upper = Gauge(
            "visor_live_recall_upper_bound",
            "One-sided Clopper-Pearson upper bound of visor_live_recall.",
            mvl,
            registry=registry,
        )
        self.live_support = Gauge(
            "visor_live_support",
            "Feedback images behind an estimate: predicted (metric=precision) or true "
            "(metric=recall) positives in the window.",
            [*mvl, "metric"],
            registry=registry,
        )
        self.live_target = Gauge(
            "visor_live_target",
            "The served thresholds' calibration target (metric=precision|recall) and the "
            "confidence level of the bounds (metric=confidence).",
            [*mv, "metric"],
            registry=registry,
        )
        self.live_feedback = Counter(
            "visor_live_feedback", "Images whose ground truth was received.", mv, registry=registry
        )
        # Counters, unlike the gauges, sum over workers and replicas: the fleet's precision,
        # recall and drift are computed from them (deploy/prometheus/rules.yml).
        self.live_outcomes = Counter(
            "visor_live_outcomes",
            "Feedback images by class and outcome at the served thresholds (outcome=tp: the "
            "class was predicted and true, fp: predicted, not true, fn: true, not predicted).",
            [*mvl, "outcome"],
            registry=registry,
        )
        self.drift_served = Counter(
            "visor_drift_served",
            "Served images by top-1 label (kind=label) and top-1 confidence bin (kind=confidence).",
            [*mv, "kind", "bucket"],
            registry=registry,
        )
        self.drift_reference = Gauge(
            "visor_drift_reference",
            "Share of the training reference in each bucket of visor_drift_served.",
            [*mv, "kind", "bucket"],
            registry=registry,
        )
        self.live_feedback_unmatched = Counter(
            "visor_live_feedback_unmatched",
            "Feedback refused because its request id was not a valid receipt, had expired, or "
            "named a version not served here.",
            registry=registry,
        )
        self.drift_psi = Gauge(
            "visor_drift_psi",
            "Population stability index of served predictions against the training reference.",
            [*mv, "kind"],
            registry=registry,
        )
        self.drift_samples = Gauge(
            "visor_drift_samples", "Served images in the drift window.", mv, registry=registry
        )

    def _rollout(self, registry: CollectorRegistry) -> None:
        """Rollouts (service/rollout): each version's role, the evidence, the verdict, the state.

        The evidence gauges hold the fleet's counts (every process's, pooled through
        VISOR_ROLLOUT_STATE), so every worker exports the same values: aggregate with max.
        """
        m, ml = ["model"], ["model", "role", "label"]
        self.rollout_role = Gauge(
            "visor_rollout_role",
            "1 for the version holding a rollout role (role=current|candidate); join on "
            "(model, version) to split any per-version series by role.",
            ["model", "version", "role"],
            registry=registry,
        )
        self.rollout_state = Gauge(
            "visor_rollout_state",
            "1 for the rollout's state (evaluating, promoted, rolled_back), 0 for the others.",
            [*m, "state"],
            registry=registry,
        )
        self.rollout_verdict = Gauge(
            "visor_rollout_verdict",
            "1 for what the decision rule says now (promote, roll_back, wait), 0 for the others; "
            "also with auto: false, when nothing acts on it.",
            [*m, "action"],
            registry=registry,
        )
        self.rollout_precision = Gauge(
            "visor_rollout_precision",
            "Precision of each role's answers over the rollout's feedback (label=overall: "
            "every answered label pooled); NaN without feedback.",
            ml,
            registry=registry,
        )
        self.rollout_support = Gauge(
            "visor_rollout_precision_support",
            "Feedback images behind visor_rollout_precision (the role's answers of the class).",
            ml,
            registry=registry,
        )
        self.rollout_difference = Gauge(
            "visor_rollout_difference_bound",
            "Newcombe bound of candidate minus current precision: bound=lower at the rule's "
            "confidence (promotion), bound=upper at its Bonferroni level (roll-back).",
            ["model", "label", "bound"],
            registry=registry,
        )
        self.rollout_agreement = Gauge(
            "visor_rollout_agreement",
            "shadow: the fraction of images the candidate answered as the current version did "
            "(kind=top1: the top label, kind=labels: the thresholded label set).",
            [*m, "kind"],
            registry=registry,
        )
        self.rollout_answered = Counter(
            "visor_rollout_answered",
            "Requests answered through a rollout by role (explicitly versioned ones excluded).",
            [*m, "role"],
            registry=registry,
        )
        self.rollout_shadow = Counter(
            "visor_rollout_shadow",
            "shadow: requests the candidate ran off the request path (outcome=compared), or "
            "skipped because its queue was full (dropped) or it failed (failed).",
            [*m, "outcome"],
            registry=registry,
        )

    def count_refusal(
        self, protocol: str, code: str, model: str = "_unknown", version: str = ""
    ) -> None:
        """A request refused before it named a model this server knows (auth, limits, format)."""
        key = (model, version, protocol, code)
        self.requests.labels(*key).inc()
        self.failures.labels(*key).inc()

    @classmethod
    def shared(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """The one ``Metrics`` of ``registry`` (default: prometheus_client's global registry)."""
        registry = registry or REGISTRY
        with cls._lock:
            metrics = cls._shared.get(id(registry))
            # Ids are reused after garbage collection: check it is the same registry.
            if metrics is None or metrics.registry is not registry:
                metrics = cls._shared[id(registry)] = cls(registry)
            return metrics


class VersionMetrics:
    """The children of one model version, resolved once so the hot path skips label lookups."""

    def __init__(self, metrics: Metrics, name: str, version: int) -> None:
        self._m = metrics
        self._key = (name, str(version))
        self.queue_time = metrics.queue_time.labels(*self._key)
        self.inference_time = metrics.inference_time.labels(*self._key)
        self.batch_size = metrics.batch_size.labels(*self._key)
        self.queue_depth = metrics.queue_depth.labels(*self._key)
        self.images = metrics.images.labels(*self._key)
        self._requests: dict[tuple[str, str], Counter] = {}
        self._predicted: list[Counter] = []

    def set_labels(self, labels: list[str]) -> None:
        self._predicted = [self._m.predicted.labels(*self._key, label) for label in labels]

    def count_request(self, protocol: str, code: str) -> None:
        child = self._requests.get((protocol, code))
        if child is None:
            child = self._m.requests.labels(*self._key, protocol, code)
            self._requests[(protocol, code)] = child
        child.inc()
        if code != "OK":
            self._m.failures.labels(*self._key, protocol, code).inc()

    def count_predicted(self, hits: np.ndarray) -> None:
        """``hits``: bool ``[N, C]``, the thresholded predictions of one request."""
        _, cols = hits.nonzero()
        for c in cols.tolist():
            self._predicted[c].inc()
