"""A Classification → the output tensors both wires return, built by one set of rules.

Each requested output becomes an ``OutputTensor``: name, datatype, shape, its values, and its
little-endian bytes when the wire sends it raw. The adapters only lay these on their wire
(typed contents or ``raw_output_contents``; JSON ``data`` or the binary tail).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Sequence
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
    raw: bytes | None  # the value as OIP raw bytes, when the wire sends this output raw


def outputs(call: InferCall, result: Classification, raw: bool | None) -> list[OutputTensor]:
    """The requested outputs. ``raw``: every output raw (gRPC ``raw_output_contents``), or None
    to follow each output's ``binary_data`` and the request's ``binary_data_output`` (REST)."""
    n, classes = len(result), result.probabilities.shape[1]
    out = []
    for spec in call.outputs:
        datatype, shape = _shape(spec, n, classes)
        value: np.ndarray | list[bytes]
        if spec.k:
            value = _classification_items(result, spec.k)
        elif spec.name == "probabilities":
            value = result.probabilities
        else:
            value = [",".join(p).encode() for p in result.predicted]
        wanted = raw if raw is not None else _binary(spec, call)
        out.append(OutputTensor(spec.name, datatype, shape, value, _raw(value) if wanted else None))
    return out


def metrics_json(result: Classification) -> str | None:
    return None if result.metrics is None else json.dumps(dataclasses.asdict(result.metrics))


def bytes_to_raw(items: Sequence[bytes]) -> bytes:
    """list of bytes → OIP raw BYTES tensor (each element: 4-byte little-endian length, bytes)."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _shape(spec: OutputSpec, n: int, classes: int) -> tuple[str, tuple[int, ...]]:
    if spec.k:
        return "BYTES", (n, min(spec.k, classes))
    if spec.name == "probabilities":
        return "FP32", (n, classes)
    return "BYTES", (n,)


def _classification_items(result: Classification, k: int) -> list[bytes]:
    """The classification extension: ``"score:index:label"`` for the k best classes per image."""
    k = min(k, result.k)
    return [f"{c.score:f}:{c.index}:{c.label}".encode() for row in result.top_k for c in row[:k]]


def _binary(spec: OutputSpec, call: InferCall) -> bool:
    return call.binary_output if spec.binary is None else spec.binary


def _raw(value: np.ndarray | list[bytes]) -> bytes:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value, dtype="<f4").tobytes()
    return bytes_to_raw(value)
