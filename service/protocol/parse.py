"""Validate an ``InferRequest`` from either wire into an ``InferCall`` the engine can run.

Everything a request may say is checked here once: names, version, parameters (known names,
types, ranges), requested outputs, and each input tensor (datatype, shape, where its data is,
element count, value ranges). Whatever the wire, the same request gets the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.protocol import params
from service.protocol.raw import bytes_from_raw, tensor_from_bytes
from service.protocol.request import (
    DEFAULT_OUTPUTS,
    GROUND_TRUTH_INPUT,
    OUTPUTS,
    InferCall,
    InferRequest,
    OutputSpec,
    RequestedOutput,
    TensorData,
)

REQUEST_PARAMETERS = (*params.OPTION_PARAMETERS, "binary_data_output")
OUTPUT_PARAMETERS = ("classification", "binary_data")
INPUT_PARAMETERS = ("binary_data_size",)
DATATYPES = ("UINT8", "FP32", "BYTES")
# Which typed ``contents`` field of a gRPC tensor goes with which datatype.
CONTENTS_FIELD = {"UINT8": "uint_contents", "FP32": "fp32_contents", "BYTES": "bytes_contents"}
MAX_DIMS = 8


def parse(request: InferRequest, max_elements: int) -> InferCall:
    """Validate ``request``; ``max_elements`` bounds what a tensor's shape may claim."""
    name = params.model_name(request.model)
    version = params.version(request.version)
    if not isinstance(request.parameters, dict):
        raise InvalidInput("'parameters' must be an object of name: value")
    params.check_known(request.parameters, REQUEST_PARAMETERS, "request parameter")
    outputs = _outputs(request.outputs)
    image, truth = _inputs(request.inputs)
    options = params.options(request.parameters)
    if truth is not None:
        if options.ground_truth is not None:
            raise InvalidInput("give the ground truth once: a 'labels' input or parameter")
        options.ground_truth = truth
    widest = max((o.k for o in outputs), default=0)
    if widest:
        # The classification extension lists k classes per image: rank at least that many.
        options.top_k = widest if options.top_k is None else max(options.top_k, widest)
    binary = request.parameters.get("binary_data_output")
    data = tensor(image, max_elements)
    return InferCall(
        model=name,
        version=version,
        images=data if isinstance(data, list) else None,
        pixels=data if isinstance(data, np.ndarray) else None,
        options=options,
        outputs=outputs,
        binary_output=False if binary is None else params.boolean(binary, "binary_data_output"),
        id=request.id if isinstance(request.id, str) else "",
    )


def _outputs(requested: list[RequestedOutput] | None) -> tuple[OutputSpec, ...]:
    if requested is None or (isinstance(requested, list) and not requested):
        return DEFAULT_OUTPUTS
    if not isinstance(requested, list):
        raise InvalidInput("'outputs' must be a list of {'name': ...} objects")
    specs: list[OutputSpec] = []
    for out in requested:
        if out.name not in OUTPUTS:
            raise InvalidInput(
                f"unknown output {params.short(out.name)}: this server returns "
                f"{', '.join(OUTPUTS)}"
            )
        if any(s.name == out.name for s in specs):
            raise InvalidInput(f"output {out.name!r} is requested twice")
        if not isinstance(out.parameters, dict):
            raise InvalidInput(f"the parameters of output {out.name!r} must be an object")
        params.check_known(out.parameters, OUTPUT_PARAMETERS, "output parameter")
        k = out.parameters.get("classification")
        binary = out.parameters.get("binary_data")
        specs.append(
            OutputSpec(
                out.name,
                0 if k is None else params.integer(k, "output parameter classification", 0),
                None if binary is None else params.boolean(binary, "binary_data"),
            )
        )
    return tuple(specs)


def _inputs(inputs: Sequence[TensorData]) -> tuple[TensorData, list[str | int] | None]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the request has no input tensor: send one image input")
    image: TensorData | None = None
    truth: list[str | int] | None = None
    seen: set[str] = set()
    for t in inputs:
        if not isinstance(t.name, str) or not t.name:
            raise InvalidInput(f"an input's name must be a non-empty string, got {t.name!r:.60}")
        if t.name in seen:
            raise InvalidInput(f"input {t.name!r} is given twice")
        seen.add(t.name)
        if not isinstance(t.parameters, dict):
            raise InvalidInput(f"the parameters of input {t.name!r} must be an object")
        params.check_known(t.parameters, INPUT_PARAMETERS, "input parameter")
        if t.name == GROUND_TRUTH_INPUT:
            truth = _truth(t)
        elif image is not None:
            raise InvalidInput("send exactly one image input tensor, got more")
        else:
            image = t
    if image is None:
        raise InvalidInput("the request has no image input tensor")
    return image, truth


def _truth(t: TensorData) -> list[str | int]:
    if t.datatype != "BYTES":
        raise InvalidInput(f"input {GROUND_TRUTH_INPUT!r} (the ground truth) must be BYTES")
    try:
        return [b.decode("utf-8") for b in tensor(t, 1 << 16)]  # type: ignore[union-attr]
    except UnicodeDecodeError:
        raise InvalidInput("ground-truth labels must be UTF-8 text") from None


def tensor(t: TensorData, max_elements: int) -> np.ndarray | list[bytes]:
    """One input → ``list[bytes]`` (BYTES) or a UINT8/FP32 array of its shape."""
    datatype, name = t.datatype, t.name
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"input {name!r}: datatype {params.short(datatype)} is not accepted: "
            "use UINT8, FP32 or BYTES"
        )
    shape = _shape(t.shape, name, max_elements)
    if t.sources != 1:
        raise InvalidInput(
            f"input {name!r} has data in {t.sources} places (e.g. both contents and "
            "raw_input_contents): send it once"
            if t.sources
            else f"input {name!r} holds no data"
        )
    if t.raw is None and t.contents_field not in (None, CONTENTS_FIELD[datatype]):
        raise InvalidInput(
            f"input {name!r}: {datatype} data goes in {CONTENTS_FIELD[datatype]}, not {t.contents_field}"
        )
    count = math.prod(shape)
    if datatype == "BYTES":
        items = bytes_from_raw(bytes(t.raw)) if t.raw is not None else _bytes(t, name)
        if len(items) != count:
            raise InvalidInput(f"input {name!r}: BYTES shape {shape} holds {len(items)} elements")
        return items
    if t.raw is not None:
        return tensor_from_bytes(t.raw, datatype, shape)
    return _numbers(t.values, datatype, shape, name)


def _shape(shape: Any, name: str, max_elements: int) -> list[int]:
    if (
        not isinstance(shape, list | tuple)
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(
            f"input {name!r} needs a 'shape': a list of 1 to {MAX_DIMS} non-negative integers"
        )
    if math.prod(shape) > max_elements:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} claims more elements than a request may hold "
            f"({max_elements})"
        )
    return list(shape)


def _bytes(t: TensorData, name: str) -> list[bytes]:
    flat = flatten(t.values)
    if not all(isinstance(v, bytes) for v in flat):
        raise InvalidInput(f"input {name!r}: BYTES elements must be bytes (base64 in JSON)")
    return flat


def _numbers(values: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        array = values.ravel()
    else:
        flat = flatten(values)
        if not all(type(v) in (int, float) for v in flat):
            raise InvalidInput(f"input {name!r}: {datatype} data must be numbers")
        array = np.asarray(flat, dtype=np.float64)
    if array.size != math.prod(shape):
        raise InvalidInput(f"input {name!r}: {datatype} shape {shape} holds {array.size} elements")
    if datatype == "UINT8":
        if array.size and (
            array.min() < 0 or array.max() > 255 or not np.array_equal(array, np.floor(array))
        ):
            raise InvalidInput(f"input {name!r}: UINT8 values must be integers in 0..255")
        return array.astype(np.uint8).reshape(shape)
    with np.errstate(over="ignore"):  # Out-of-range values become inf: refused later
        return array.astype(np.float32).reshape(shape)


def flatten(values: Any) -> list[Any]:
    """Nested lists → one flat list, without recursion (a body may nest deeply)."""
    if not isinstance(values, list | tuple):
        return [values]
    out: list[Any] = []
    stack = [iter(values)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list | tuple):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out
