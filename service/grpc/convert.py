"""Open Inference Protocol messages ↔ the engine's types. No model logic here."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import codecs
from service.errors import InvalidInput
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.types import Classification, InferOptions

OUTPUTS = ("probabilities", "labels")
GROUND_TRUTH_INPUT = "labels"
DEFAULT_OUTPUTS = tuple((name, 0) for name in OUTPUTS)
DEFAULT_OPTIONS = InferOptions()


@dataclass(slots=True)
class InferCall:
    """One ModelInferRequest, decoded: what to run and what to send back."""

    images: list[bytes] | None  # encoded images, or
    pixels: np.ndarray | None  # a UINT8/FP32 [N, H, W, C] view of the request bytes
    options: InferOptions
    outputs: tuple[tuple[str, int], ...]  # (name, classification k or 0); hashable: a cache key
    raw: bool  # answer with raw_output_contents


def parameter(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {k: parameter(v) for k, v in params.items()}


def decode_request(req: pb.ModelInferRequest) -> InferCall:
    params = parameters(req.parameters) if req.parameters else None
    raw = req.raw_input_contents
    inputs = req.inputs
    if raw and len(raw) != len(inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(inputs)} inputs")
    image, truth = None, None
    for i, tensor in enumerate(inputs):  # NOTE: one pass; usually a single input
        if tensor.name == GROUND_TRUTH_INPUT:
            items = codecs.bytes_from_raw(raw[i]) if raw else list(tensor.contents.bytes_contents)
            truth = [b.decode("utf-8", "replace") for b in items]
        elif image is not None:
            raise InvalidInput("send exactly one image input tensor, got more")
        else:
            image = i
    if image is None:
        raise InvalidInput("the request has no image input tensor")
    outputs = _outputs(req) if req.outputs else DEFAULT_OUTPUTS
    if params is None and truth is None and outputs is DEFAULT_OUTPUTS:
        options = DEFAULT_OPTIONS
    else:
        params = params or {}
        if truth is None and "labels" in params:
            truth = _list(params["labels"], "labels")
        options = _options(params, outputs, truth)
    tensor, data = inputs[image], raw[image] if raw else None
    if tensor.datatype == "BYTES":
        images = (
            codecs.bytes_from_raw(data)
            if data is not None
            else list(tensor.contents.bytes_contents)
        )
        _check_count(len(images), tensor.shape, "BYTES")
        return InferCall(images, None, options, outputs, bool(raw))
    return InferCall(None, _pixels(tensor, data), options, outputs, bool(raw))


def _pixels(tensor: pb.ModelInferRequest.InferInputTensor, data: bytes | None) -> np.ndarray:
    shape = list(tensor.shape)
    if data is not None:
        return codecs.tensor_from_bytes(data, tensor.datatype, shape)
    if tensor.datatype == "FP32":
        values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
    elif tensor.datatype == "UINT8":
        values = np.asarray(tensor.contents.uint_contents, dtype=np.uint32)
        if values.size and values.max() > 255:
            raise InvalidInput("UINT8 tensor holds values over 255")
        values = values.astype(np.uint8)
    else:
        raise InvalidInput(
            f"datatype {tensor.datatype!r} is not accepted: use UINT8, FP32 or BYTES"
        )
    _check_count(values.size, shape, tensor.datatype)
    return values.reshape(shape)


def _check_count(count: int, shape: Any, datatype: str) -> None:
    if any(d < 0 for d in shape) or count != math.prod(shape):
        raise InvalidInput(f"{datatype} tensor of shape {list(shape)} holds {count} elements")


def _outputs(req: pb.ModelInferRequest) -> tuple[tuple[str, int], ...]:
    out = []
    for o in req.outputs:
        if o.name not in OUTPUTS:
            raise InvalidInput(
                f"unknown output {o.name!r}: this server returns {', '.join(OUTPUTS)}"
            )
        k = parameter(o.parameters["classification"]) if "classification" in o.parameters else 0
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidInput(
                f"output parameter classification must be a positive integer, got {k!r}"
            )
        out.append((o.name, k))
    return tuple(out)


def _options(
    params: dict[str, Any], outputs: tuple[tuple[str, int], ...], truth: list[str] | None
) -> InferOptions:
    top_k = params.get("top_k")
    if isinstance(top_k, str):
        top_k = _number(top_k, "top_k", int)
    widest = max((k for _, k in outputs), default=0)
    if widest and (top_k is None or (isinstance(top_k, int) and top_k < widest)):
        top_k = widest  # NOTE: the classification extension needs at least k classes ranked
    threshold = params.get("threshold")
    if isinstance(threshold, str):
        items = _list(threshold, "threshold")
        threshold = [_number(v, "threshold", float) for v in items]
        threshold = threshold[0] if len(threshold) == 1 else threshold
    return InferOptions(
        top_k=top_k,
        threshold=threshold,
        target_precision=_opt_number(params.get("target_precision"), "target_precision"),
        target_recall=_opt_number(params.get("target_recall"), "target_recall"),
        ground_truth=truth,
    )


def _list(text: Any, what: str) -> list:
    if not isinstance(text, str):
        return [text]
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidInput(f"{what} is not a valid JSON list: {text!r}") from None
        return value if isinstance(value, list) else [value]
    return [v.strip() for v in text.split(",") if v.strip()]


def _number(value: Any, what: str, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number, got {value!r}") from None


def _opt_number(value: Any, what: str) -> float | None:
    return (
        None if value is None else _number(value, what, float) if isinstance(value, str) else value
    )


def encode_response(
    req: pb.ModelInferRequest,
    call: InferCall,
    result: Classification,
    resp: pb.ModelInferResponse | None = None,
) -> pb.ModelInferResponse:
    """Classification → ModelInferResponse with the requested outputs, raw or as contents.

    ``resp``: an empty message to fill in place (a stream answer's ``infer_response``, which
    saves copying the finished response into it)."""
    if resp is None:
        resp = pb.ModelInferResponse()
    n = len(result)
    resp.MergeFrom(
        _skeleton(
            result.model,
            result.version,
            result.threshold_source,
            call.outputs,
            n,
            result.probabilities.shape[1],
            result.k,
        )
    )
    resp.id = req.id or result.request_id
    resp.parameters["request_id"].string_param = result.request_id
    if result.metrics is not None:
        from dataclasses import asdict

        resp.parameters["metrics"].string_param = json.dumps(asdict(result.metrics))
    for i, (name, k) in enumerate(call.outputs):
        if k:
            k = min(k, result.k)
            items = [
                f"{c.score:f}:{c.index}:{c.label}".encode() for row in result.top_k for c in row[:k]
            ]
            _put_bytes(resp, i, items, call.raw)
        elif name == "probabilities":
            if call.raw:
                resp.raw_output_contents.append(
                    result.probabilities.astype("<f4", copy=False).tobytes()
                )
            else:
                resp.outputs[i].contents.fp32_contents.extend(result.probabilities.ravel().tolist())
        else:  # labels: the thresholded labels of each image, highest probability first
            _put_bytes(resp, i, [",".join(p).encode() for p in result.predicted], call.raw)
    return resp


@functools.lru_cache(maxsize=256)
def _skeleton(
    model: str,
    version: int,
    threshold_source: str,
    outputs: tuple[tuple[str, int], ...],
    n: int,
    classes: int,
    k: int,
) -> pb.ModelInferResponse:
    """A response's fields that do not depend on the images: names, datatypes, shapes.

    # NOTE: the same few skeletons serve nearly every request, and one MergeFrom of a cached
    # message costs less than building the fields one by one (finding 16 in docs/benchmarks.md).
    # Callers only ever merge it: never change the cached message.
    """
    resp = pb.ModelInferResponse(model_name=model, model_version=str(version))
    resp.parameters["threshold_source"].string_param = threshold_source
    for name, want in outputs:
        if want:
            resp.outputs.add(name=name, datatype="BYTES", shape=[n, min(want, k)])
        elif name == "probabilities":
            resp.outputs.add(name=name, datatype="FP32", shape=[n, classes])
        else:
            resp.outputs.add(name=name, datatype="BYTES", shape=[n])
    return resp


def _put_bytes(resp: pb.ModelInferResponse, i: int, items: list[bytes], raw: bool) -> None:
    if raw:
        resp.raw_output_contents.append(codecs.bytes_to_raw(items))
    else:
        resp.outputs[i].contents.bytes_contents.extend(items)
