"""The OpenAPI 3.1 document of Visor's HTTP API, served at /docs.json.

Generated from what the server already has: the bodies are the pydantic models of ``schemas.py``
(pydantic writes JSON Schema 2020-12, the dialect of OpenAPI 3.1), the path parameters come from
the path templates, the error answers from ``service/errors.py`` and the API-key requirement
from the middleware's open paths. What no model says (which route answers what, in which group)
is ``ROUTES``, one row per operation; a test compares it with the routes the app really has.
No generator library fits: FastAPI, spectree and apispec document routes declared through their
own routing or docstrings, while Visor's are BentoML's, two mounted Starlette apps and BentoML's
own probes.
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
from service.http import schemas as s
from service.http.middleware import is_open

Content = dict[str, Any]

# per status: what it means, and an answer worded as the server words it
ERRORS: dict[int, tuple[str, errors.VisorError]] = {
    400: ("Malformed input, a bad option, an undecodable image, a wrong shape or dtype.",
          errors.InvalidInput("images[0] is not valid base64.")),
    401: ("A missing or wrong API key (only when VISOR_API_KEYS is set).",
          errors.Unauthenticated("This server needs an API key: send 'Authorization: Bearer "
                                 "<key>' or 'X-API-Key'.")),
    404: ("Unknown model, version, file or (feedback) request id.",
          errors.ModelNotFound("model 'pets' is not in the repository")),
    409: ("Feedback for an image whose ground truth was already recorded.",
          errors.FeedbackConflict("image 0 of request 5f0c... already has its ground truth")),
    413: ("The body is over VISOR_MAX_BODY_BYTES.",
          errors.PayloadTooLarge("The request body is 70000 bytes, over this server's limit of "
                                 "65536 bytes (VISOR_MAX_BODY_BYTES): send fewer or smaller "
                                 "images per request.")),
    503: (("Not ready (`unavailable`: loading, failed, shutting down) or the queue is full "
           "(`queue_full`): retry later or elsewhere."),
          errors.ModelUnavailable("the server is starting: models are still loading; retry")),
    504: ("The deadline (VISOR_REQUEST_TIMEOUT_S) passed before the work ran.",
          errors.DeadlineExceeded("the request's deadline passed while it waited in the queue")),
    500: ("A bug in Visor.",
          errors.InternalError("An unexpected error has occurred, please check the server log.")),
}  # fmt: skip
TAGS = {  # Swagger UI lists the groups in this order
    "inference": "Classify and evaluate images (multipart files or JSON with base64).",
    "models": "The model repository: versions, status, thresholds, model cards, reports.",
    "v2": "Open Inference Protocol (KServe v2) REST, for Triton/KServe clients.",
    "probes": "Health and Prometheus metrics (no API key).",
    "pages": "The web page, this reference and their files (no API key).",
}
REQUESTS: list[type[BaseModel]] = [
    s.ClassifyInput,
    s.EvaluateInput,
    s.InferRequest,
    s.FeedbackInput,
]
ANSWERS: list[type[BaseModel]] = [
    s.ClassifyOutput, s.EvaluateOutput, s.ErrorBody, s.UnexpectedErrorBody, s.ModelList,
    s.ModelCard, s.Live, s.Ready, s.ServerMetadata, s.ModelMetadataV2, s.InferResponse,
    s.FeedbackOutput, s.RetargetedThresholds, s.LiveView,
]  # fmt: skip
PARAMETERS = {  # path parameter → description; {version} is an integer outside /v2
    "name": "Model name, as GET /models lists it.",
    "model": "Model name.",
    "version": "Model version (a positive integer).",
    "file": "A file name.",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(*media: str, **schema: str) -> Content:
    return {m: {"schema": {"type": "string", **schema}} for m in media}


def _json(name: str) -> Content:
    return {"application/json": {"schema": ref(name)}}


def _form(name: str) -> Content:
    return {
        "multipart/form-data": {
            "schema": ref(name),
            "encoding": {"image": {"contentType": "image/*"}},
        },
        **_json(name.replace("Form", "Input")),
    }


HTML, TEXT, JS = _text("text/html"), _text("text/plain"), _text("text/javascript")
ANY_JSON = {"application/json": {"schema": {"type": "object"}}}
# the binary tensor extension: a JSON header of Inference-Header-Content-Length bytes, then tensors
BINARY = _text("application/octet-stream", format="binary")
INFER = (400, 404, 413, 503, 504)
NO_FILE = {404: ("No such file.", TEXT)}
CLASSIFY = (
    "One file part per image (any field name; `image` here), options as form fields. "
    "`threshold` and `labels` take comma-separated values. Or JSON with base64 `images`."
)
INFER_DOC = (
    "Also the binary tensor extension: `Inference-Header-Content-Length` + raw tensors after the "
    "JSON header (application/octet-stream), and `Content-Encoding: gzip|deflate`."
)
V2_MODEL = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")

# (method, path, tag, summary, 200 content, error statuses, request body, {status: (text, content)})
ROUTES: list[tuple[Any, ...]] = [
    ("get", "/", "pages", "The web page: models, model cards, classify images", HTML),
    ("get", "/docs", "pages", "This API reference (Swagger UI, served offline)", HTML),
    ("get", "/docs.json", "pages", "This OpenAPI document", ANY_JSON),
    ("get", "/ui/{file}", "pages", "The web page's files: app.js, style.css, docs.js",
     {**JS, **_text("text/css")}, (), None, NO_FILE),
    ("get", "/docs/assets/{file}", "pages", "Swagger UI's files (from BentoML's package)", JS,
     (), None, NO_FILE),
    ("get", "/static_content/{file}", "pages", "BentoML's stock Swagger files (unused by /docs)",
     JS, (), None, NO_FILE),
    ("get", "/schema.json", "pages", "BentoML's own service schema (for its clients)", ANY_JSON),
    ("post", "/classify", "inference", "Classify images: probabilities, top-k, thresholded labels",
     _json("ClassifyOutput"), INFER, _form("ClassifyForm"), {}, CLASSIFY),
    ("post", "/evaluate", "inference", "Labelled images → precision, recall, F1, confusion matrix",
     _json("EvaluateOutput"), INFER, _form("EvaluateForm"), {}, CLASSIFY),
    ("post", "/feedback", "inference", "The true labels of an answered request: live precision",
     _json("FeedbackOutput"), (400, 404, 409), _json("FeedbackInput"), {},
     "The ground truth feeds live precision/recall; see docs/monitoring.md."),
    ("get", "/models", "models", "Every model version: status, labels, thresholds, metrics",
     _json("ModelList")),
    ("get", "/models/{name}/{version}/card", "models",
     "One version in full: thresholds with calibration curves, metrics, report links",
     _json("ModelCard"), (404,)),
    ("get", "/models/{name}/{version}/report/{file}", "models",
     "A file training wrote into report/ (PNG figures, MODEL_CARD.md; MODEL_CARD.html renders it)",
     {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
      **_text("text/markdown"), **_text("text/html")}, (404,)),
    ("get", "/models/{name}/{version}/thresholds", "models",
     "The thresholds target_precision or target_recall gives, certified or not, per class",
     _json("RetargetedThresholds"), (400, 404)),
    ("get", "/models/{name}/{version}/live", "models",
     "Live verification of a served version: feedback, precision/recall with bounds, drift",
     _json("LiveView"), (404, 503)),
    ("get", "/v2", "v2", "Server metadata", _json("ServerMetadata")),
    ("get", "/v2/health/live", "v2", "Server liveness", _json("Live"), (), None,
     {503: ("Not live.", _json("Live"))}),
    ("get", "/v2/health/ready", "v2", "Server readiness", _json("Ready"), (), None,
     {503: ("Not ready.", _json("Ready"))}),
    *[("get", base, "v2", "Model metadata (inputs, outputs, labels)", _json("ModelMetadataV2"),
       (400, 404)) for base in V2_MODEL],
    *[("get", f"{base}/ready", "v2", "Model readiness", _json("Ready"), (400,), None,
       {503: ("Not ready (or unknown).", _json("Ready"))}) for base in V2_MODEL],
    *[("post", f"{base}/infer", "v2", "Inference (Open Inference Protocol)",
       {**_json("InferResponse"), **BINARY}, INFER, {**_json("InferRequest"), **BINARY}, {},
       INFER_DOC) for base in V2_MODEL],
    ("get", "/livez", "probes", "Liveness probe", TEXT, (), None,
     {503: ("The engine is not live.", TEXT)}),
    ("get", "/healthz", "probes", "Liveness probe (alias of /livez)", TEXT, (), None,
     {503: ("The engine is not live.", TEXT)}),
    ("get", "/readyz", "probes", "Readiness: 200 once every model is loaded and warm", TEXT, (),
     None, {503: ("Not ready yet.", TEXT)}),
    ("get", "/metrics", "probes", "Prometheus metrics (visor_* and bentoml_*)", TEXT),
]  # fmt: skip


def classify_form(model: type[s.ClassifyInput]) -> dict[str, Any]:
    """The multipart body of /classify and /evaluate: the JSON body's fields, with file parts for
    ``images``, lists as comma-separated text, and no null (an absent field is not given)."""
    schema = model.model_json_schema()
    fields = schema["properties"]
    del fields["images"]
    for field in fields.values():
        field.pop("default", None)
        options = [o for o in field.pop("anyOf", []) if o != {"type": "null"}]
        field.update(options[0] if len(options) == 1 else {})
    for name, example in (("threshold", "0.3,0.5,0.9"), ("labels", "cat,dog")):
        text = f"{fields[name]['description']} Comma-separated: {example}"
        fields[name] = {"type": "string", "description": text}
    image = {"type": "array", "items": {"type": "string", "format": "binary"},
             "description": "One or more encoded images (PNG, JPEG, BMP, GIF, WebP)."}  # fmt: skip
    required = ["image", *(n for n in schema.get("required", []) if n != "images")]
    return {"type": "object", "required": required, "properties": {"image": image, **fields},
            "not": schema["not"]}  # fmt: skip


def schemas() -> dict[str, Any]:
    pairs = [(m, "validation") for m in REQUESTS] + [(m, "serialization") for m in ANSWERS]
    _, found = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = found["$defs"]
    defs["ClassifyForm"] = classify_form(s.ClassifyInput)
    defs["EvaluateForm"] = classify_form(s.EvaluateInput)
    return dict(sorted(defs.items()))


def error_answer(status: int) -> dict[str, Any]:
    text, example = ERRORS[status]
    schema = ref("UnexpectedErrorBody" if status == 500 else "ErrorBody")
    content = {"schema": schema, "example": {"error": example.message, "code": example.reason}}
    return {"description": text, "content": {"application/json": content}}


def parameter(path: str, name: str) -> dict[str, Any]:
    integer = name == "version" and not path.startswith("/v2")
    schema = {"type": "integer", "minimum": 1} if integer else {"type": "string"}
    return {"name": name, "in": "path", "required": True, "description": PARAMETERS[name],
            "schema": schema}  # fmt: skip


def operation(
    method: str,
    path: str,
    tag: str,
    summary: str,
    ok: Content,
    statuses: tuple[int, ...] = (),
    body: Content | None = None,
    other: dict[int, tuple[str, Content]] | None = None,
    doc: str = "",
) -> dict[str, Any]:
    needs_key = not is_open(path)
    codes = {*statuses, 500, *([401] if needs_key else []), *([413] if body else [])}
    answers = {str(c): error_answer(c) for c in codes}
    answers |= {
        str(c): {"description": text, "content": content}
        for c, (text, content) in (other or {}).items()
    }
    words = re.findall(r"[A-Za-z0-9]+", path)
    out: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "operationId": "_".join([method, *words]) if words else f"{method}_index",
        "responses": dict(sorted({"200": {"description": "OK", "content": ok}, **answers}.items())),
    }
    if doc:
        out["description"] = doc
    if names := re.findall(r"{(\w+)}", path):
        out["parameters"] = [parameter(path, name) for name in names]
    if body is not None:
        out["requestBody"] = {"required": True, "content": body}
    if not needs_key:
        out["security"] = []  # no key needed, even when keys are configured
    return out


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process: it depends on code, not on requests)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, *rest in ROUTES:
        paths.setdefault(path, {})[method] = operation(method, path, *rest)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Visor",
            "version": _visor_version(),
            "description": "Image classifiers trained with Keras, served over HTTP and gRPC. "
            'Every error answer is JSON: `{"error": sentence, "code": reason}`.',
        },
        # Relative to this document's own URL, so "Try it out" works behind a path prefix.
        "servers": [{"url": ".", "description": "The server of this document"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],  # either; enforced when keys are set
    }


def _visor_version() -> str:
    try:
        return package_version("visor")
    except PackageNotFoundError:
        return "0"
