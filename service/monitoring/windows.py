"""Bounded, rolling stores of one model version: images already given feedback (each counts
once), feedback counts (for precision/recall) and served predictions (for drift).

Every store is bounded by size and by age; appends and evictions are O(1) (amortised) and keep
running counts, so the aggregates never rescan a window. Time is ``time.monotonic()`` seconds,
passed in by the caller (tests pass their own clock).
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np


class AnsweredImages:
    """Request nonce → images whose feedback was recorded, so each image counts once; oldest
    first, at most ``capacity`` requests, none older than ``ttl_s`` (a receipt that old is
    refused before it is looked up)."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, set[int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def of(self, nonce: str, now: float) -> set[int]:
        """The images of request ``nonce`` already answered (empty when none)."""
        self.expire(now)
        item = self._items.get(nonce)
        return item[1] if item is not None else set()

    def mark(self, nonce: str, images: set[int], now: float) -> None:
        item = self._items.get(nonce)
        if item is None:
            self._items[nonce] = (now, set(images))
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            item[1].update(images)

    def expire(self, now: float) -> None:
        items = self._items
        while items:
            created, _ = next(iter(items.values()))
            if now - created <= self.ttl_s:
                return
            items.popitem(last=False)


def outcomes(predicted: tuple[int, ...], truth: int) -> list[tuple[int, str]]:
    """One image's (class, "tp" | "fp" | "fn") at the served thresholds, one-vs-rest."""
    found = [(c, "tp" if c == truth else "fp") for c in predicted]
    return found if truth in predicted else [*found, (truth, "fn")]


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
        counts = {"tp": self.tp, "fp": self.fp, "fn": self.fn}
        for c, outcome in outcomes(predicted, truth):
            counts[outcome][c] += sign
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
