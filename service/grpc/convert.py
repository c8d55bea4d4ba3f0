"""Open Inference Protocol protobuf messages ↔ the protocol layer's types. Copies fields only.

Validation lives in ``service.protocol``; this module moves a ``ModelInferRequest`` into an
``InferRequest`` and a ``Classification`` into a ``ModelInferResponse``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.protocol import InferCall, InferRequest, RequestedOutput, TensorData
from service.protocol.response import metrics_json, outputs
from service.types import Classification

# Typed contents fields, and how to read each into a numpy array without a Python loop.
_NUMERIC_FIELDS = {
    "fp32_contents": np.float32,
    "uint_contents": np.uint32,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint64_contents": np.uint64,
    "fp64_contents": np.float64,
    "bool_contents": np.bool_,
}


def parameter(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {k: parameter(v) for k, v in params.items()}


def to_request(req: pb.ModelInferRequest) -> InferRequest:
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        # The one check of gRPC's own layout: raw_input_contents pair with inputs by index.
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs")
    return InferRequest(
        model=req.model_name,
        version=req.model_version,
        inputs=[_tensor(t, raw[i] if raw else None) for i, t in enumerate(req.inputs)],
        outputs=[RequestedOutput(o.name, parameters(o.parameters)) for o in req.outputs] or None,
        parameters=parameters(req.parameters) if req.parameters else {},
        id=req.id,
    )


def _tensor(t: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> TensorData:
    filled = [f.name for f, _ in t.contents.ListFields()] if t.HasField("contents") else []
    sources = len(filled) + (raw is not None)
    values: Any = None
    field = filled[0] if filled else None
    if field == "bytes_contents":
        values = list(t.contents.bytes_contents)
    elif field is not None:
        values = np.asarray(getattr(t.contents, field), dtype=_NUMERIC_FIELDS[field])
    return TensorData(
        name=t.name,
        datatype=t.datatype,
        shape=list(t.shape),
        values=values,
        raw=raw,
        sources=sources,
        contents_field=field,
        parameters=parameters(t.parameters) if t.parameters else {},
    )


def encode_response(
    req: pb.ModelInferRequest,
    call: InferCall,
    result: Classification,
    resp: pb.ModelInferResponse | None = None,
) -> pb.ModelInferResponse:
    """Classification → ModelInferResponse with the requested outputs, raw or as contents.

    ``resp``: an empty message to fill in place (a stream answer's ``infer_response``)."""
    if resp is None:
        resp = pb.ModelInferResponse()
    tensors = outputs(call, result, raw=bool(req.raw_input_contents))
    heads = tuple((t.name, t.datatype, t.shape) for t in tensors)
    resp.MergeFrom(_skeleton(result.model, result.version, result.threshold_source, heads))
    resp.id = req.id or result.request_id
    resp.parameters["request_id"].string_param = result.request_id
    if (metrics := metrics_json(result)) is not None:
        resp.parameters["metrics"].string_param = metrics
    for i, t in enumerate(tensors):
        if t.raw is not None:
            resp.raw_output_contents.append(t.raw)
        elif isinstance(t.value, np.ndarray):
            resp.outputs[i].contents.fp32_contents.extend(t.value.ravel().tolist())
        else:
            resp.outputs[i].contents.bytes_contents.extend(t.value)
    return resp


@functools.lru_cache(maxsize=256)
def _skeleton(
    model: str, version: int, threshold_source: str, heads: tuple[tuple[str, str, tuple], ...]
) -> pb.ModelInferResponse:
    """A response's fields that do not depend on the images: names, datatypes, shapes.

    The same few skeletons serve nearly every request, and one MergeFrom of a cached message
    costs less than building the fields one by one. Callers only merge it: never change it.
    """
    resp = pb.ModelInferResponse(model_name=model, model_version=str(version))
    resp.parameters["threshold_source"].string_param = threshold_source
    for name, datatype, shape in heads:
        resp.outputs.add(name=name, datatype=datatype, shape=shape)
    return resp
