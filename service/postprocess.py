"""Model output → probabilities, top-k, thresholded labels and (with ground truth) batch metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service.errors import InvalidInput
from service.metadata import ModelMetadata
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
        self._curves = {
            i: (np.asarray(c.thresholds), np.asarray(c.precision), np.asarray(c.recall))
            for i, label in enumerate(self.labels)
            if (c := meta.thresholds.curves.get(label)) is not None and c.thresholds
        }
        self._index = {label: i for i, label in enumerate(self.labels)}
        self._model = f"{meta.name} v{meta.version}"
        # NOTE: what a response's threshold_source says when a request names no thresholds
        self.default_source = "calibrated" if meta.thresholds.calibrated else "fixed"
        self._retargeted: dict[tuple[str, float], np.ndarray] = {}

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
        if (
            options.threshold is None
            and options.target_precision is None
            and options.target_recall is None
        ):
            return self.calibrated, self.default_source  # NOTE: the common case, first
        given = [
            options.threshold is not None,
            options.target_precision is not None,
            options.target_recall is not None,
        ]
        if sum(given) > 1:
            raise InvalidInput("give at most one of threshold, target_precision and target_recall")
        if options.threshold is not None:
            return self._explicit(options.threshold), "request"
        if options.target_precision is not None:
            target = _unit(options.target_precision, "target_precision")
            return self._retarget("precision", target), f"target_precision={target:g}"
        if options.target_recall is not None:
            target = _unit(options.target_recall, "target_recall")
            return self._retarget("recall", target), f"target_recall={target:g}"
        return self.calibrated, self.default_source

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

    def _retarget(self, metric: str, target: float) -> np.ndarray:
        if not self._curves:
            # NOTE: e.g. an imported model without calibration data: there is nothing to
            # re-target from, and silently keeping the fixed thresholds would hide that.
            raise InvalidInput(
                f"model {self._model} has no calibration curves (its thresholds are not "
                f"calibrated), so target_{metric} cannot be applied: give 'threshold' instead"
            )
        cached = self._retargeted.get((metric, target))
        if cached is None:
            cached = np.array(
                [self._class_threshold(i, metric, target) for i in range(len(self.labels))],
                np.float32,
            )
            # NOTE: a bounded cache: targets are few in practice, the arrays tiny.
            if len(self._retargeted) < 256:
                self._retargeted[(metric, target)] = cached
        return cached

    def _class_threshold(self, i: int, metric: str, target: float) -> float:
        curve = self._curves.get(i)
        if curve is None:
            return float(self.calibrated[i])
        thresholds, precision, recall = curve
        if metric == "precision":
            # NOTE: the lowest threshold reaching the precision keeps the most recall;
            # unreachable → the threshold of the best precision seen (best effort, as training).
            ok = np.flatnonzero(precision >= target)
            return float(thresholds[ok.min()] if ok.size else thresholds[np.argmax(precision)])
        ok = np.flatnonzero(recall >= target)  # the highest threshold still reaching the recall
        return float(thresholds[ok.max()] if ok.size else thresholds[np.argmax(recall)])

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
    # NOTE: for multilabel-indicator input scikit-learn averages over every column; naming
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
