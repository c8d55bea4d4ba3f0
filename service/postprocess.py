"""Model output → probabilities, top-k, thresholded labels and (with ground truth) batch metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from contract.calibration import CurveCounts, choose, choose_by_estimate
from contract.metadata import ModelMetadata
from service.errors import InvalidInput
from service.types import BatchMetrics, ClassMetricsResult, InferOptions


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _unit(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{what} must be in [0, 1], got {value}")
    return float(value)


class Postprocessor:
    """Holds one version's labels, calibrated thresholds and curves; validates request options."""

    def __init__(self, meta: ModelMetadata, default_top_k: int) -> None:
        self.labels = list(meta.labels)
        self.logits = meta.output.kind == "logits"
        self.default_top_k = default_top_k
        self.calibrated = np.array([c.threshold for c in meta.thresholds.per_class], np.float32)
        self.calibrated_certified = np.array([c.certified for c in meta.thresholds.per_class])
        self._confidence = meta.thresholds.bound_confidence
        self._curves = {
            i: (np.asarray(c.thresholds), np.asarray(c.precision), np.asarray(c.recall))
            for i, label in enumerate(self.labels)
            if (c := meta.thresholds.curves.get(label)) is not None and c.thresholds
        }
        self._counts = {
            i: CurveCounts(
                np.asarray(c.thresholds), np.asarray(c.tp), np.asarray(c.predicted), c.positives
            )
            for i, label in enumerate(self.labels)
            if (c := meta.thresholds.curves.get(label)) is not None
            and c.thresholds
            and c.tp is not None
        }
        self._index = {label: i for i, label in enumerate(self.labels)}
        self._model = f"{meta.name} v{meta.version}"
        # What a response's threshold_source says when a request names no thresholds
        self.default_source = "calibrated" if meta.thresholds.calibrated else "fixed"
        self._retargeted: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        out = np.asarray(output, dtype=np.float32)
        return softmax(out.copy()) if self.logits else out

    def top_k(self, options: InferOptions) -> int:
        k = self.default_top_k if options.top_k is None else options.top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"top_k must be a positive integer, got {k!r}")
        return min(k, len(self.labels))

    def thresholds(self, options: InferOptions) -> tuple[np.ndarray, str]:
        """The thresholds a request asks for, and where they came from."""
        thresholds, source, _ = self.decision(options)
        return thresholds, source

    def decision(self, options: InferOptions) -> tuple[np.ndarray, str, np.ndarray | None]:
        """Thresholds, their source, and per class whether the target is certified.

        ``certified`` is None for explicit thresholds: there is no target to certify.
        """
        if (
            options.threshold is None
            and options.target_precision is None
            and options.target_recall is None
        ):
            return self.calibrated, self.default_source, self.calibrated_certified  # common
        given = [
            options.threshold is not None,
            options.target_precision is not None,
            options.target_recall is not None,
        ]
        if sum(given) > 1:
            raise InvalidInput("give at most one of threshold, target_precision and target_recall")
        if options.threshold is not None:
            return self._explicit(options.threshold), "request", None
        metric = "precision" if options.target_precision is not None else "recall"
        target = _unit(
            options.target_precision if metric == "precision" else options.target_recall,
            f"target_{metric}",
        )
        thresholds, certified = self._retarget(metric, target)
        return thresholds, f"target_{metric}={target:g}", certified

    def _explicit(self, threshold: float | Sequence[float]) -> np.ndarray:
        if isinstance(threshold, str | bytes):
            raise InvalidInput(
                f"threshold must be a number or a list of numbers, got {threshold!r}"
            )
        if isinstance(threshold, int | float):
            return np.full(len(self.labels), _unit(threshold, "threshold"), np.float32)
        values = list(threshold)
        if len(values) != len(self.labels):
            raise InvalidInput(
                f"threshold has {len(values)} values but the model has {len(self.labels)} classes"
            )
        return np.array([_unit(v, f"threshold[{i}]") for i, v in enumerate(values)], np.float32)

    def _retarget(self, metric: str, target: float) -> tuple[np.ndarray, np.ndarray]:
        if not self._curves:
            # E.g. an imported model without calibration data: there is nothing to
            # re-target from, and silently keeping the fixed thresholds would hide that.
            raise InvalidInput(
                f"model {self._model} has no calibration curves (its thresholds are not "
                f"calibrated), so target_{metric} cannot be applied: give 'threshold' instead"
            )
        cached = self._retargeted.get((metric, target))
        if cached is None:
            chosen = [self._class_threshold(i, metric, target) for i in range(len(self.labels))]
            cached = (
                np.array([t for t, _ in chosen], np.float32),
                np.array([c for _, c in chosen], bool),
            )
            # A bounded cache: targets are few in practice, the arrays tiny.
            if len(self._retargeted) < 256:
                self._retargeted[(metric, target)] = cached
        return cached

    def _class_threshold(self, i: int, metric: str, target: float) -> tuple[float, bool]:
        """The threshold for ``metric >= target`` and whether the stored counts certify it."""
        counts = self._counts.get(i)
        if counts is not None:  # the rule training used (contract.calibration)
            choice = choose(counts, metric, target, self._confidence)
            return float(counts.thresholds[choice.index]), choice.certified
        curve = self._curves.get(i)
        if curve is None:
            return float(self.calibrated[i]), False
        # Metadata without counts (older or imported models): point estimates only, so
        # nothing is certified.
        thresholds, precision, recall = curve
        return float(thresholds[choose_by_estimate(precision, recall, metric, target)]), False

    def ground_truth(self, truth: Sequence[str | int], n: int) -> np.ndarray:
        if len(truth) != n:
            raise InvalidInput(f"{len(truth)} ground-truth labels for {n} images")
        out = np.empty(n, dtype=np.int64)
        for j, label in enumerate(truth):
            if isinstance(label, str) and label in self._index:
                out[j] = self._index[label]
            elif (
                isinstance(label, int)
                and not isinstance(label, bool)
                and 0 <= label < len(self.labels)
            ):
                out[j] = label
            else:
                raise InvalidInput(
                    f"ground-truth label {label!r} (image {j}) is not one of the model's labels"
                )
        return out


def batch_metrics(
    probabilities: np.ndarray, thresholds: np.ndarray, truth: np.ndarray, labels: list[str]
) -> BatchMetrics:
    """Accuracy (argmax) and one-vs-rest precision/recall/F1 at ``thresholds`` (scikit-learn).

    Macro averages cover the labels present in the batch, true or predicted (scikit-learn's
    ``labels=None`` rule for multiclass targets), with ``zero_division=0``: a present label with
    no predicted (true) image scores precision (recall) 0. Labels absent from the batch keep a
    per-class entry of support 0 and zeros, and are left out of the averages.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = len(labels)
    y_true = np.zeros((len(truth), classes), dtype=np.int8)
    y_true[np.arange(len(truth)), truth] = 1
    y_pred = (probabilities >= thresholds).astype(np.int8)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    # For multilabel-indicator input scikit-learn averages over every column; naming
    # the present ones restores its multiclass rule, so absent labels do not count as 0.
    present = np.flatnonzero(y_true.any(axis=0) | y_pred.any(axis=0))
    mp, mr, mf, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0
    )
    argmax = probabilities.argmax(axis=1)
    return BatchMetrics(
        accuracy=float(accuracy_score(truth, argmax)),
        per_class={
            label: ClassMetricsResult(float(p[i]), float(r[i]), float(f[i]), int(s[i]))
            for i, label in enumerate(labels)
        },
        macro_precision=float(mp),
        macro_recall=float(mr),
        macro_f1=float(mf),
        macro_labels=[labels[i] for i in present],
        confusion_matrix=confusion_matrix(truth, argmax, labels=range(classes)).tolist(),
        samples=len(truth),
    )
