"""Protocol-neutral Open Inference Protocol messages: what both wire adapters copy into and out of.

The gRPC adapter (``service/grpc/convert.py``) and the REST adapter (``service/http/v2.py``) only
move fields between their wire format and these types; every check of what a request may say
lives in ``service.protocol.parse``, so the two wires cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.types import InferOptions

# The outputs this server returns, and the input name that carries ground truth (not images).
OUTPUTS = ("probabilities", "labels")
GROUND_TRUTH_INPUT = "labels"


@dataclass(slots=True)
class TensorData:
    """One input tensor as it arrived: exactly one of ``values`` or ``raw`` is set by the adapter.

    ``values``: the elements as the wire listed them (numbers, or ``bytes`` for BYTES), flat or
    nested; ``raw``: the little-endian bytes of the binary extension / ``raw_input_contents``.
    ``sources`` counts how many places held data (contents fields, raw, JSON ``data``): more than
    one is a contradiction the parser refuses.
    """

    name: Any
    datatype: Any
    shape: Any
    values: Any = None
    raw: bytes | memoryview | None = None
    sources: int = 1
    contents_field: str | None = None  # gRPC: which typed contents field held ``values``
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: Any
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A ModelInferRequest from either wire, before validation."""

    model: Any
    version: Any
    inputs: list[TensorData]
    outputs: list[RequestedOutput] | None = None  # None: not given, the default outputs
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One validated requested output. ``k`` > 0: the classification extension with k classes."""

    name: str
    k: int = 0
    binary: bool | None = None  # REST only: binary_data; None = the request's default


@dataclass(slots=True)
class InferCall:
    """A validated request: what the engine runs and what the answer must hold."""

    model: str
    version: int | None
    images: list[bytes] | None  # encoded images, or
    pixels: np.ndarray | None  # a UINT8/FP32 [N, H, W, C] array (often a view on the request)
    options: InferOptions
    outputs: tuple[OutputSpec, ...]
    binary_output: bool = False  # REST: binary_data_output
    id: str = ""


DEFAULT_OUTPUTS = tuple(OutputSpec(name) for name in OUTPUTS)
