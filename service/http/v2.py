"""Open Inference Protocol (KServe v2) REST routes, mounted under ``/v2`` on the BentoML service.

Thin: copy the JSON (and binary tensors) into the protocol layer's request, call the engine, lay
the output tensors out as JSON or binary. Validation lives in ``service.protocol``. Outputs:
``probabilities`` (FP32 [N, classes]), ``labels`` (BYTES [N], the thresholded labels joined by
","), and the classification extension (``parameters.classification: k`` → BYTES [N, k]
"score:index:label").
Request parameters ``threshold``, ``target_precision``, ``target_recall``, ``top_k`` are passed on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import InvalidInput, VisorError
from service.http.middleware import visor_error_response
from service.http.tensors import encode_output, inflate, input_tensor, split_body
from service.protocol import InferRequest, RequestedOutput, response
from service.protocol.params import check_known

EXTENSIONS = ["binary_tensor_data"]  # besides the engine's, which both wires share
REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
PROTOCOL = "rest_v2"


def _engine(request: Request) -> Any:
    return request.app.state.engine


async def live(request: Request) -> Response:
    live = bool(_engine(request).live)
    return JSONResponse({"live": live}, status_code=200 if live else 503)


async def ready(request: Request) -> Response:
    ready = bool(_engine(request).ready)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def server_metadata(request: Request) -> Response:
    meta = _engine(request).server_metadata()
    return JSONResponse({**meta, "extensions": meta["extensions"] + EXTENSIONS})


async def model_ready(request: Request) -> Response:
    path = request.path_params
    ok = _engine(request).model_ready(path["model"], path.get("version"))
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    path = request.path_params
    meta = _engine(request).model_metadata(path["model"], path.get("version"))
    parameters = {"labels": meta.pop("labels"), "thresholds": meta.pop("thresholds")}
    if (rollout := meta.pop("rollout")) is not None:
        parameters["rollout"] = rollout
    return JSONResponse({**meta, "parameters": parameters})


async def infer(request: Request) -> Response:
    engine = _engine(request)
    path = request.path_params
    try:
        oip = await _read_request(request)
    except VisorError as err:
        engine.record_failure(path["model"], path.get("version"), PROTOCOL, err)
        raise
    deadline = time.monotonic() + request.app.state.timeout_s
    call, result = await engine.infer(oip, protocol=PROTOCOL, deadline=deadline)
    chunks: list[bytes] = []
    outputs = [encode_output(out, chunks) for out in response.outputs(call, result, raw=None)]
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
    body["id"] = call.id or result.request_id
    head = json.dumps(body).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(
        b"".join([head, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


async def _read_request(request: Request) -> InferRequest:
    """The body (JSON, or JSON + binary tensors) → the protocol layer's request; fields copied."""
    body = inflate(
        await request.body(), request.headers.get("content-encoding"), request.app.state.max_body
    )
    header, tail = split_body(body, request.headers.get("inference-header-content-length"))
    check_known(header, REQUEST_FIELDS, "request field")
    inputs, offset = [], 0
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInput("The inference request needs an 'inputs' list.")
    for spec in raw_inputs:
        tensor, offset = input_tensor(spec, tail, offset)
        inputs.append(tensor)
    if offset != len(tail):
        raise InvalidInput(
            f"The body holds {len(tail) - offset} bytes of binary data no input claims."
        )
    outputs = header.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise InvalidInput("'outputs' must be a list of {'name': ...} objects.")
        for o in outputs:
            check_known(o, ("name", "parameters"), "output field")
        outputs = [RequestedOutput(o.get("name"), o.get("parameters") or {}) for o in outputs]
    return InferRequest(
        model=request.path_params["model"],
        version=request.path_params.get("version"),
        inputs=inputs,
        outputs=outputs,
        parameters=header.get("parameters") or {},
        id=header.get("id", ""),
    )


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
    app = Starlette(routes=routes, exception_handlers={VisorError: visor_error_response})
    app.state.timeout_s = timeout_s
    app.state.max_body = 64 * 1024 * 1024
    return app
