"""Open Inference Protocol (KServe v2) REST routes, mounted under ``/v2`` on the BentoML service.

Thin: decode the wire tensors, call the engine, encode the outputs. Outputs: ``probabilities``
(FP32 [N, classes]), ``labels`` (BYTES [N], the thresholded labels joined by ","), and the
classification extension (``parameters.classification: k`` → BYTES [N, k] "score:index:label").
Request parameters ``threshold``, ``target_precision``, ``target_recall``, ``top_k`` are passed on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import InvalidInput, VisorError
from service.http.tensors import decode_input, encode_output, inflate, split_body
from service.types import Classification, InferOptions, ModelInfo

EXTENSIONS = ["binary_tensor_data", "classification"]
OUTPUTS = ("probabilities", "labels")
GROUND_TRUTH_INPUT = "labels"


def _engine(request: Request) -> Any:
    return request.app.state.engine


def _version(request: Request) -> int | None:
    raw = request.path_params.get("version")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise InvalidInput(f"Model version '{raw}' is not a positive integer.")
    return int(raw)


async def live(request: Request) -> Response:
    return JSONResponse({"live": True}, status_code=200 if _engine(request).live else 503)


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": True}, status_code=200 if _engine(request).ready else 503)


async def server_metadata(request: Request) -> Response:
    try:
        visor_version = package_version("visor")
    except PackageNotFoundError:
        visor_version = "0"
    return JSONResponse({"name": "visor", "version": visor_version, "extensions": EXTENSIONS})


async def model_ready(request: Request) -> Response:
    ok = _engine(request).model_ready(request.path_params["model"], _version(request))
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    engine = _engine(request)
    info: ModelInfo = engine.model_info(request.path_params["model"], _version(request))
    meta = info.metadata
    if meta is None:
        raise InvalidInput(f"Model {info.name} version {info.version} has no valid metadata.")
    versions = sorted({m.version for m in engine.models() if m.name == info.name})
    return JSONResponse(
        {
            "name": info.name,
            "versions": [str(v) for v in versions],
            "platform": f"visor_{info.backend or 'onnx'}",
            "inputs": [
                {
                    "name": meta.input.name,
                    "datatype": "FP32",
                    "shape": [-1, meta.input.height, meta.input.width, meta.input.channels],
                }
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(meta.labels)]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1]},
            ],
            "parameters": {"labels": meta.labels},
        }
    )


async def infer(request: Request) -> Response:
    body = inflate(
        await request.body(), request.headers.get("content-encoding"), request.app.state.max_body
    )
    header, tail = split_body(body, request.headers.get("inference-header-content-length"))
    tensors, offset = {}, 0
    for spec in header["inputs"]:
        tensors[spec.get("name")], offset = decode_input(spec, tail, offset)
    # NOTE: as on gRPC, a BYTES input named "labels" carries the ground truth, not images.
    truth = tensors.pop(GROUND_TRUTH_INPUT, None)
    if len(tensors) != 1:
        raise InvalidInput("Send exactly one image input: encoded images (BYTES) or pixels.")
    (images,) = tensors.values()
    requested = header.get("outputs") or [{"name": n} for n in OUTPUTS]
    params = header.get("parameters") or {}
    options = _options(params, requested, truth)
    engine = _engine(request)
    name, version = request.path_params["model"], _version(request)
    deadline = time.monotonic() + request.app.state.timeout_s
    if isinstance(images, list):
        result = await engine.classify_images(
            name, version, images, options, protocol="rest_v2", deadline=deadline
        )
    else:
        result = await engine.classify_array(
            name, version, images, options, protocol="rest_v2", deadline=deadline
        )
    binary_default = bool(params.get("binary_data_output", False))
    chunks: list[bytes] = []
    outputs = [_output(result, spec, binary_default, chunks) for spec in requested]
    body: dict[str, Any] = {
        "model_name": result.model,
        "model_version": str(result.version),
        "outputs": outputs,
        "parameters": {
            "threshold_source": result.threshold_source,
            "request_id": result.request_id,
        },
    }
    if result.metrics is not None:
        body["parameters"]["metrics"] = dataclasses.asdict(result.metrics)
    body["id"] = header.get("id") or result.request_id
    head = json.dumps(body).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(
        b"".join([head, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def _options(params: dict[str, Any], requested: list[dict[str, Any]], truth: Any) -> InferOptions:
    """Request parameters → InferOptions; strings like "0.3,0.5" are accepted as on gRPC."""
    top_k = params.get("top_k")
    if top_k is None:
        ks = [(o.get("parameters") or {}).get("classification") for o in requested]
        top_k = max((k for k in ks if k), default=None)
    if truth is None and params.get("labels") is not None:
        truth = _split(params["labels"])
    elif truth is not None:
        truth = [t.decode("utf-8", "replace") for t in truth]
    threshold = params.get("threshold")
    try:
        if isinstance(threshold, str):
            parts = [float(v) for v in _split(threshold)]
            threshold = parts[0] if len(parts) == 1 else parts
        return InferOptions(
            top_k=None if top_k is None else int(top_k),
            threshold=threshold,
            target_precision=_float(params.get("target_precision")),
            target_recall=_float(params.get("target_recall")),
            ground_truth=truth,
        )
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"A request parameter has the wrong type: {err}.") from err


def _split(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _output(
    result: Classification, spec: dict[str, Any], binary_default: bool, chunks: list[bytes]
) -> dict[str, Any]:
    params = spec.get("parameters") or {}
    binary = bool(params.get("binary_data", binary_default))
    name, n = spec.get("name"), len(result)
    if k := params.get("classification"):
        rows = [
            [f"{c.score:f}:{c.index}:{c.label}".encode() for c in top[: int(k)]]
            for top in result.top_k
        ]
        width = min(int(k), len(result.labels))
        return encode_output(name, [v for r in rows for v in r], [n, width], binary, chunks)
    if name == "probabilities":
        probs: np.ndarray = result.probabilities
        return encode_output(name, probs, list(probs.shape), binary, chunks)
    if name == "labels":
        joined = [",".join(labels).encode() for labels in result.predicted]
        return encode_output(name, joined, [n], binary, chunks)
    raise InvalidInput(f"Unknown output '{name}': this server returns {', '.join(OUTPUTS)}.")


async def _visor_error(_request: Request, err: Exception) -> Response:
    assert isinstance(err, VisorError)
    return JSONResponse({"error": err.message, "code": err.reason}, status_code=err.http_status)


def create_v2_app(timeout_s: float = 30.0) -> Starlette:
    """The /v2 app; the service sets ``app.state.engine`` (and the timeout) once it starts."""
    model = "/models/{model}"
    versioned = "/models/{model}/versions/{version}"
    routes = [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/", server_metadata),
    ]
    for base in (versioned, model):
        routes += [
            Route(base, model_metadata),
            Route(f"{base}/ready", model_ready),
            Route(f"{base}/infer", infer, methods=["POST"]),
        ]
    app = Starlette(routes=routes, exception_handlers={VisorError: _visor_error})
    app.state.timeout_s = timeout_s
    app.state.max_body = 64 * 1024 * 1024
    return app
