"""A Classification → the output tensors both wires return, built by one set of rules.

Each requested output becomes an ``OutputTensor`` (name, datatype, shape, value); the adapters
only choose how to lay the value on their wire (typed contents, raw bytes, JSON, binary tail).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from service.protocol.request import InferCall, OutputSpec
from service.types import Classification


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str  # "FP32" | "BYTES"
    shape: tuple[int, ...]
    value: np.ndarray | list[bytes]
    binary: bool | None  # REST only: the output's binary_data, None = the request's default


def output_shape(spec: OutputSpec, n: int, classes: int) -> tuple[str, tuple[int, ...]]:
    """Datatype and shape of one output for ``n`` images; independent of the images' values."""
    if spec.k:
        return "BYTES", (n, min(spec.k, classes))
    if spec.name == "probabilities":
        return "FP32", (n, classes)
    return "BYTES", (n,)


def classification_items(result: Classification, k: int) -> list[bytes]:
    """The classification extension: ``"score:index:label"`` for the k best classes per image."""
    k = min(k, result.k)
    return [f"{c.score:f}:{c.index}:{c.label}".encode() for row in result.top_k for c in row[:k]]


def label_items(result: Classification) -> list[bytes]:
    """The thresholded labels of each image, highest probability first, joined by ","."""
    return [",".join(p).encode() for p in result.predicted]


def outputs(call: InferCall, result: Classification) -> list[OutputTensor]:
    n, classes = len(result), result.probabilities.shape[1]
    out = []
    for spec in call.outputs:
        datatype, shape = output_shape(spec, n, classes)
        if spec.k:
            value: np.ndarray | list[bytes] = classification_items(result, spec.k)
        elif spec.name == "probabilities":
            value = result.probabilities
        else:
            value = label_items(result)
        out.append(OutputTensor(spec.name, datatype, shape, value, spec.binary))
    return out


def metrics_json(result: Classification) -> str | None:
    return None if result.metrics is None else json.dumps(dataclasses.asdict(result.metrics))
