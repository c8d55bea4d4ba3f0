"""The engine's own types: front-ends convert their wire formats to and from these."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from service.metadata import ModelMetadata


class ModelStatus(str, enum.Enum):
    """Lifecycle of one model version in the repository."""

    LOADING = "loading"  # verifying, loading or warming up
    READY = "ready"  # serving requests
    FAILED = "failed"  # did not load or verify; ``ModelInfo.reason`` says why
    UNLOADING = "unloading"  # removed from the repository, draining in-flight work
    UNLOADED = "unloaded"  # gone


# NOTE: not frozen: a frozen dataclass sets each field through object.__setattr__, which costs
# more than the rest of a small request's option handling. Treat instances as read-only.
@dataclass(slots=True)
class InferOptions:
    """Per-request postprocessing options; every field optional.

    ``threshold`` is one value for every class or one per class (label order).
    ``target_precision`` / ``target_recall`` re-target the thresholds from the stored
    calibration curves. ``ground_truth`` (one label, or label index, per image) asks for
    batch metrics at the applied thresholds. Validated by the engine (InvalidInput).
    """

    top_k: int | None = None
    threshold: float | Sequence[float] | None = None
    target_precision: float | None = None
    target_recall: float | None = None
    ground_truth: Sequence[str | int] | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a front-end may show about one model version."""

    name: str
    version: int
    status: ModelStatus
    reason: str = ""  # why FAILED, empty otherwise
    metadata: ModelMetadata | None = None  # None when metadata.json did not validate
    backend: str = ""  # onnx | savedmodel | keras_h5
    device: str = ""  # the execution provider / device actually active, e.g. CPUExecutionProvider
    max_batch_size: int = 0

    @property
    def ready(self) -> bool:
        return self.status is ModelStatus.READY

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.labels) if self.metadata else []


_T = TypeVar("_T")


class _once(Generic[_T]):  # lower case: used as a decorator, like functools.cached_property
    """``functools.cached_property`` without its lock.

    Python 3.11's cached_property takes one RLock shared by every instance on each first
    access. A Classification lives for one request on the event loop and each of its lazy
    fields is read once, so every read paid for the lock. The value is stored in the
    instance's ``__dict__``, which shadows this (non-data) descriptor from then on.
    """

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]
        value = obj.__dict__[self.name] = self.func(obj)
        return value


@dataclass(frozen=True, slots=True)
class ClassMetricsResult:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """Metrics of one request's images against the ground truth it carried.

    ``accuracy`` is top-1 (argmax) accuracy; per-class precision/recall/F1 are one-vs-rest at
    the applied thresholds; ``confusion_matrix`` rows are true labels, columns the argmax.
    """

    accuracy: float
    per_class: dict[str, ClassMetricsResult]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]
    samples: int


class TopClass(NamedTuple):
    label: str
    index: int
    score: float


@dataclass
class Classification:
    """The engine's answer for one request of N images."""

    model: str
    version: int
    labels: list[str]  # the model's labels, column order of ``probabilities``
    probabilities: np.ndarray  # float32 [N, C]
    k: int  # how many classes ``top_k`` lists per image
    thresholds: np.ndarray  # float32 [C], the thresholds applied
    threshold_source: str  # "calibrated", "request", "target_precision=0.9", ...
    # bool [C]: the target behind the thresholds is certified (service.calibration) per class;
    # None for thresholds the request gave (no target).
    certified: np.ndarray | None = None
    device: str = ""
    metrics: BatchMetrics | None = None
    extra: dict[str, object] = field(default_factory=dict)

    # NOTE: top-k lists and thresholded labels are built lazily: a gRPC client asking only
    # for the probabilities tensor never pays for Python lists it does not read.
    @_once
    def ranking(self) -> np.ndarray:
        """int64 ``[N, C]``: every class index, best first (ties keep label order)."""
        return np.argsort(-self.probabilities, axis=1, kind="stable")

    @_once
    def top_k_indices(self) -> np.ndarray:
        """int64 ``[N, k]`` class indices, best first (ties keep label order)."""
        return self.ranking[:, : self.k]

    @_once
    def top_k(self) -> list[list[TopClass]]:
        rows = np.take_along_axis(self.probabilities, self.top_k_indices, axis=1)
        return [
            [TopClass(self.labels[i], int(i), float(s)) for i, s in zip(idx, row, strict=True)]
            for idx, row in zip(self.top_k_indices.tolist(), rows.tolist(), strict=True)
        ]

    @_once
    def hits(self) -> np.ndarray:
        """bool ``[N, C]``: the classes at or over their threshold."""
        return self.probabilities >= self.thresholds

    @_once
    def predicted(self) -> list[list[str]]:
        """Thresholded labels per image, highest probability first (ties keep label order)."""
        # NOTE: one nonzero over the batch and plain lists; only a row with several hits is
        # sorted, so the usual one-image, one-label request skips the argsort over every class
        # (docs/benchmarks.md, finding 16).
        rows, cols = np.nonzero(self.hits)
        chosen: list[list[int]] = [[] for _ in range(len(self))]
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            chosen[r].append(c)
        labels = self.labels
        out = []
        for r, cs in enumerate(chosen):
            if len(cs) > 1:
                scores = self.probabilities[r].tolist()
                cs.sort(key=lambda c: -scores[c])  # stable: ties stay in label order
            out.append([labels[c] for c in cs])
        return out

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])
