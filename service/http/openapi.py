"""The OpenAPI 3.1 document of Visor's HTTP API, served at /docs.json.

Built from ``openapi_routes.OPERATIONS`` (the paths) and pydantic models (the schemas, through
pydantic's own JSON Schema generator, which speaks the 2020-12 dialect OpenAPI 3.1 uses). Error
answers come from ``service/errors.py``; which operations need an API key comes from the
middleware's list of open paths, so neither can drift from what the server does.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import errors
from service.http import openapi_schemas as s
from service.http.middleware import is_open
from service.http.openapi_routes import OPERATIONS, Operation, ref
from service.http.schemas import ClassifyInput, ClassifyOutput, EvaluateInput, EvaluateOutput

# NOTE: one example per status, worded as the server words it (service/auth.py, engine.py...).
ERROR_EXAMPLES: dict[int, errors.VisorError] = {
    400: errors.InvalidInput("images[0] is not valid base64."),
    401: errors.Unauthenticated(
        "This server needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key'."
    ),
    404: errors.ModelNotFound("model 'pets' is not in the repository"),
    409: errors.FeedbackConflict("image 0 of request 5f0c... already has its ground truth"),
    413: errors.PayloadTooLarge(
        "The request body is 70000 bytes, over this server's limit of 65536 bytes "
        "(VISOR_MAX_BODY_BYTES): send fewer or smaller images per request."
    ),
    503: errors.ModelUnavailable("the server is starting: models are still loading; retry"),
    504: errors.DeadlineExceeded("the request's deadline passed while it waited in the queue"),
    500: errors.InternalError("An unexpected error has occurred, please check the server log."),
}
ERROR_TEXT = {
    400: "Malformed input, a bad option, an undecodable image, a wrong shape or dtype.",
    401: "A missing or wrong API key (only when VISOR_API_KEYS is set).",
    404: "Unknown model, version, file or (feedback) request id.",
    409: "Feedback for an image whose ground truth was already recorded.",
    413: "The body is over VISOR_MAX_BODY_BYTES.",
    503: "Not ready (`unavailable`: loading, failed, shutting down) or the queue is full "
    "(`queue_full`): retry later or elsewhere.",
    504: "The deadline (VISOR_REQUEST_TIMEOUT_S) passed before the work ran.",
    500: "A bug in Visor.",
}
# NOTE: Swagger UI lists the groups in this order.
TAGS = {
    "inference": "Classify and evaluate images (multipart files or JSON with base64).",
    "models": "The model repository: versions, status, thresholds, model cards, reports.",
    "v2": "Open Inference Protocol (KServe v2) REST, for Triton/KServe clients.",
    "probes": "Health and Prometheus metrics (no API key).",
    "pages": "The web page, this reference and their files (no API key).",
}
REQUEST_MODELS: list[type[BaseModel]] = [
    ClassifyInput, EvaluateInput, s.InferRequest, s.FeedbackInput,
]  # fmt: skip
RESPONSE_MODELS: list[type[BaseModel]] = [
    ClassifyOutput, EvaluateOutput, s.ErrorBody, s.UnexpectedErrorBody, s.ModelList, s.ModelCard,
    s.Live, s.Ready, s.ServerMetadata, s.ModelMetadataV2, s.InferResponse, s.FeedbackOutput,
]  # fmt: skip


# NOTE: the engine takes at most one of these per request (service/postprocess.py); null is
# "not given" in the JSON form, so only non-null pairs are refused.
_GIVEN = {"not": {"type": "null"}}
ONE_THRESHOLD_OPTION = {
    "anyOf": [
        {"required": list(pair), "properties": dict.fromkeys(pair, _GIVEN)}
        for pair in (
            ("threshold", "target_precision"),
            ("threshold", "target_recall"),
            ("target_precision", "target_recall"),
        )
    ],
    "description": "At most one of threshold, target_precision and target_recall.",
}


def classify_form(labels_required: bool) -> dict[str, Any]:
    """The multipart body of /classify and /evaluate: files, and options as text fields."""
    option = {"type": "string"}
    return {
        "type": "object",
        "required": ["image", "labels"] if labels_required else ["image"],
        "properties": {
            "image": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": "One or more encoded images (PNG, JPEG, BMP, GIF, WebP).",
            },
            "model": {**option, "description": "Model name; optional when one is served."},
            "version": {"type": "integer", "minimum": 1},
            "top_k": {"type": "integer", "minimum": 1},
            "threshold": {**option, "description": "One value, or one per class: 0.3,0.5,0.9"},
            "target_precision": {"type": "number", "minimum": 0, "maximum": 1},
            "target_recall": {"type": "number", "minimum": 0, "maximum": 1},
            "labels": {**option, "description": "True label per image, comma-separated."},
        },
    }


def schemas() -> dict[str, Any]:
    pairs = [(m, "validation") for m in REQUEST_MODELS]
    pairs += [(m, "serialization") for m in RESPONSE_MODELS]
    _, found = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = found["$defs"]
    defs["ClassifyForm"] = classify_form(labels_required=False)
    defs["EvaluateForm"] = classify_form(labels_required=True)
    for name in ("ClassifyForm", "EvaluateForm", "ClassifyInput", "EvaluateInput"):
        defs[name]["not"] = ONE_THRESHOLD_OPTION
    return dict(sorted(defs.items()))


def error_response(status: int) -> dict[str, Any]:
    schema = "UnexpectedErrorBody" if status == 500 else "ErrorBody"
    example = ERROR_EXAMPLES[status]
    return {
        "description": ERROR_TEXT[status],
        "content": {
            "application/json": {
                "schema": ref(schema),
                "example": {"error": example.message, "code": example.reason},
            }
        },
    }


def operation_id(op: Operation) -> str:
    """e.g. ``get_models_name_version_card``: unique, and a valid identifier for generators."""
    words = re.findall(r"[A-Za-z0-9]+", op.path)
    return "_".join([op.method, *words]) if words else f"{op.method}_index"


def operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": op.ok}}
    statuses = set(op.errors) | {500}
    if not is_open(op.path):
        statuses.add(401)
    if op.request is not None:
        statuses.add(413)
    for status in sorted(statuses):
        responses[str(status)] = error_response(status)
    for status, answer in op.extra.items():
        responses[str(status)] = answer
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": operation_id(op),
        "responses": dict(sorted(responses.items())),
    }
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": op.request}
    if is_open(op.path):
        out["security"] = []  # NOTE: no key needed, even when keys are configured
    return out


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process: it depends on code, not on requests)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Visor",
            "version": _visor_version(),
            "description": "Image classifiers trained with Keras, served over HTTP and gRPC. "
            'Every error answer is JSON: `{"error": sentence, "code": reason}`.',
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        # NOTE: either scheme is enough; enforced only when VISOR_API_KEYS is set.
        "security": [{"apiKey": []}, {"bearer": []}],
    }


def _visor_version() -> str:
    try:
        return package_version("visor")
    except PackageNotFoundError:
        return "0"
