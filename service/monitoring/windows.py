"""Bounded, rolling stores of one model version: recent predictions (for feedback), feedback
counts (for precision/recall) and served predictions (for drift).

Every store is bounded by size and by age; appends and evictions are O(1) (amortised) and keep
running counts, so the aggregates never rescan a window. Time is ``time.monotonic()`` seconds,
passed in by the caller (tests pass their own clock).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np


# Tuples, and no set until feedback arrives: the store holds tens of thousands of these.
@dataclass(slots=True)
class Prediction:
    """What one request's images were answered with, kept until feedback arrives."""

    created: float
    predicted: tuple[tuple[int, ...], ...]  # thresholded class indices per image
    top1: tuple[int, ...]  # argmax per image
    confidence: tuple[float, ...]  # top-1 probability per image
    answered: set[int] | None = None  # images whose feedback was recorded

    def mark_answered(self, image: int) -> None:
        if self.answered is None:
            self.answered = set()
        self.answered.add(image)

    def was_answered(self, image: int) -> bool:
        return self.answered is not None and image in self.answered


class PredictionStore:
    """request id → Prediction, oldest first; at most ``capacity`` ids, none older than ``ttl_s``."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, Prediction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, request_id: str, prediction: Prediction) -> None:
        self._items[request_id] = prediction
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        self.expire(prediction.created)

    def get(self, request_id: str, now: float) -> Prediction | None:
        """The prediction, or None when the id is unknown, evicted or older than ``ttl_s``."""
        self.expire(now)
        return self._items.get(request_id)

    def expire(self, now: float) -> None:
        items = self._items
        while items:
            oldest = next(iter(items.values()))
            if now - oldest.created <= self.ttl_s:
                return
            items.popitem(last=False)


class FeedbackWindow:
    """Per-class true/false positives and false negatives over the latest feedback images.

    One-vs-rest at the served thresholds: an image with true class t and thresholded classes P
    adds a true positive to t if t ∈ P, a false positive to every other class of P, and a false
    negative to t if t ∉ P. Evicted images subtract the same counts.
    """

    def __init__(self, classes: int, capacity: int, max_age_s: float) -> None:
        self.capacity = capacity
        self.max_age_s = max_age_s
        self.tp = np.zeros(classes, np.int64)
        self.fp = np.zeros(classes, np.int64)
        self.fn = np.zeros(classes, np.int64)
        self._items: deque[tuple[float, tuple[int, ...], int]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, now: float, predicted: tuple[int, ...], truth: int) -> set[int]:
        """Count one image; returns the classes whose counts changed (evictions included)."""
        self._items.append((now, predicted, truth))
        touched = self._count(predicted, truth, +1)
        while len(self._items) > self.capacity:
            touched |= self._evict()
        return touched | self.expire(now)

    def expire(self, now: float) -> set[int]:
        touched: set[int] = set()
        while self._items and now - self._items[0][0] > self.max_age_s:
            touched |= self._evict()
        return touched

    def _evict(self) -> set[int]:
        _, predicted, truth = self._items.popleft()
        return self._count(predicted, truth, -1)

    def _count(self, predicted: tuple[int, ...], truth: int, sign: int) -> set[int]:
        for c in predicted:
            if c == truth:
                self.tp[c] += sign
            else:
                self.fp[c] += sign
        if truth not in predicted:
            self.fn[truth] += sign
        return {truth, *predicted}


class DriftWindow:
    """Counts of the top-1 label and of the top-1 confidence bin over the latest served images."""

    def __init__(self, classes: int, bins: int, capacity: int, max_age_s: float) -> None:
        self.capacity = capacity
        self.max_age_s = max_age_s
        # Plain lists: on the request path an item increment of a list costs a fraction
        # of a numpy array's.
        self.labels = [0] * classes
        self.confidence = [0] * bins
        self._items: deque[tuple[float, int, int]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, now: float, top1: list[int], bins: list[int]) -> None:
        items, labels, confidence = self._items, self.labels, self.confidence
        for label, b in zip(top1, bins, strict=True):
            items.append((now, label, b))
            labels[label] += 1
            confidence[b] += 1
        while len(items) > self.capacity:
            self._evict()
        self.expire(now)

    def expire(self, now: float) -> None:
        while self._items and now - self._items[0][0] > self.max_age_s:
            self._evict()

    def _evict(self) -> None:
        _, label, b = self._items.popleft()
        self.labels[label] -= 1
        self.confidence[b] -= 1
