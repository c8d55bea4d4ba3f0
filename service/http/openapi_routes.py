"""Every HTTP route the server answers, as the OpenAPI document lists it: the one place to edit.

A new route gets one ``Operation`` in ``OPERATIONS``; ``openapi.py`` adds the error answers, the
security requirement (from the middleware's open paths) and the schemas. A test compares this
list with the routes the running application really has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Content = dict[str, Any]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: str) -> Content:
    return {"application/json": {"schema": ref(schema)}}


def path_param(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": kind, **({"minimum": 1} if kind == "integer" else {})},
    }


@dataclass(frozen=True)
class Operation:
    """One method on one path; ``errors`` are the statuses answered with the error schema."""

    method: str
    path: str
    summary: str
    tag: str
    ok: Content = field(default_factory=dict)  # content of the 200 answer
    errors: tuple[int, ...] = ()
    request: Content | None = None  # requestBody content by media type
    parameters: tuple[dict[str, Any], ...] = ()
    description: str = ""
    extra: dict[int, dict[str, Any]] = field(default_factory=dict)  # other answers, verbatim


TEXT = {"text/plain": {"schema": {"type": "string"}}}
HTML = {"text/html": {"schema": {"type": "string"}}}
# NOTE: the binary tensor extension: a JSON header of Inference-Header-Content-Length bytes,
# then the raw tensors.
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
INFER_ERRORS = (400, 404, 413, 503, 504)
NAME = path_param("name", "Model name, as GET /models lists it.")
VERSION = path_param("version", "Model version.", "integer")
MODEL = path_param("model", "Model name.")
V2_VERSION = path_param("version", "Model version (a positive integer).")
CLASSIFY_DOC = (
    "One file part per image (any field name; `image` here), options as form fields. "
    "`threshold` and `labels` take comma-separated values. Or JSON with base64 `images`."
)

_V2_MODEL: list[Operation] = []
for _base, _params in (
    ("/v2/models/{model}", (MODEL,)),
    ("/v2/models/{model}/versions/{version}", (MODEL, V2_VERSION)),
):
    _V2_MODEL += [
        Operation("get", _base, "Model metadata (inputs, outputs, labels)", "v2",
                  json_body("ModelMetadataV2"), (400, 404), parameters=_params),
        Operation("get", f"{_base}/ready", "Model readiness", "v2", json_body("Ready"), (400,),
                  parameters=_params,
                  extra={503: {"description": "Not ready (or unknown).",
                               "content": json_body("Ready")}}),
        Operation("post", f"{_base}/infer", "Inference (Open Inference Protocol)", "v2",
                  {**json_body("InferResponse"), **BINARY}, INFER_ERRORS,
                  {**json_body("InferRequest"), **BINARY}, _params,
                  "Also the binary tensor extension: `Inference-Header-Content-Length` + raw "
                  "tensors after the JSON header (application/octet-stream), and "
                  "`Content-Encoding: gzip|deflate`."),
    ]  # fmt: skip

OPERATIONS: list[Operation] = [
    Operation("get", "/", "The web page: models, model cards, classify images", "pages", HTML),
    Operation("get", "/docs", "This API reference (Swagger UI, served offline)", "pages", HTML),
    Operation("get", "/docs.json", "This OpenAPI document", "pages",
              {"application/json": {"schema": {"type": "object"}}}),
    Operation("get", "/ui/{file}", "The web page's script and style sheet", "pages",
              {"text/javascript": {"schema": {"type": "string"}},
               "text/css": {"schema": {"type": "string"}}},
              parameters=(path_param("file", "app.js, style.css, docs.js"),),
              extra={404: {"description": "No such file.", "content": TEXT}}),
    Operation("get", "/docs/assets/{file}", "Swagger UI's files (from BentoML's package)",
              "pages", {"text/javascript": {"schema": {"type": "string"}}},
              parameters=(path_param("file", "e.g. swagger-ui-bundle.js"),),
              extra={404: {"description": "No such file.", "content": TEXT}}),
    Operation("get", "/static_content/{file}", "BentoML's stock Swagger files (unused by /docs)",
              "pages", {"text/javascript": {"schema": {"type": "string"}}},
              parameters=(path_param("file", "e.g. swagger-ui.css"),),
              extra={404: {"description": "No such file.", "content": TEXT}}),
    Operation("get", "/schema.json", "BentoML's own service schema (for BentoML clients)",
              "pages", {"application/json": {"schema": {"type": "object"}}}),
    Operation("post", "/classify", "Classify images: probabilities, top-k, thresholded labels",
              "inference", json_body("ClassifyOutput"), INFER_ERRORS,
              {"multipart/form-data": {"schema": ref("ClassifyForm"),
                                       "encoding": {"image": {"contentType": "image/*"}}},
               **json_body("ClassifyInput")}, description=CLASSIFY_DOC),
    Operation("post", "/evaluate", "Labelled images → precision, recall, F1, confusion matrix",
              "inference", json_body("EvaluateOutput"), INFER_ERRORS,
              {"multipart/form-data": {"schema": ref("EvaluateForm"),
                                       "encoding": {"image": {"contentType": "image/*"}}},
               **json_body("EvaluateInput")}, description=CLASSIFY_DOC),
    Operation("post", "/feedback", "The true labels of an answered request: live precision/recall",
              "inference", json_body("FeedbackOutput"), (400, 404, 409),
              json_body("FeedbackInput"), description="See docs/monitoring.md."),
    Operation("get", "/models", "Every model version: status, labels, thresholds, metrics",
              "models", json_body("ModelList")),
    Operation("get", "/models/{name}/{version}/card",
              "One version in full: thresholds with calibration curves, metrics, report links",
              "models", json_body("ModelCard"), (404,), parameters=(NAME, VERSION)),
    Operation("get", "/models/{name}/{version}/report/{file}",
              "A file training wrote into report/ (PNG figures, MODEL_CARD.md)", "models",
              {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
               "text/markdown": {"schema": {"type": "string"}}}, (404,),
              parameters=(NAME, VERSION, path_param("file", "e.g. pr_curves.png"))),
    Operation("get", "/v2", "Server metadata", "v2", json_body("ServerMetadata")),
    Operation("get", "/v2/health/live", "Server liveness", "v2", json_body("Live"),
              extra={503: {"description": "Not live.", "content": json_body("Live")}}),
    Operation("get", "/v2/health/ready", "Server readiness", "v2", json_body("Ready"),
              extra={503: {"description": "Not ready.", "content": json_body("Ready")}}),
    *_V2_MODEL,
    Operation("get", "/livez", "Liveness probe", "probes", TEXT,
              extra={503: {"description": "The engine is not live.", "content": TEXT}}),
    Operation("get", "/healthz", "Liveness probe (alias of /livez)", "probes", TEXT,
              extra={503: {"description": "The engine is not live.", "content": TEXT}}),
    Operation("get", "/readyz", "Readiness: 200 once every model is loaded and warm", "probes",
              TEXT, extra={503: {"description": "Not ready yet.", "content": TEXT}}),
    Operation("get", "/metrics", "Prometheus metrics (visor_* and bentoml_*)", "probes",
              {"text/plain": {"schema": {"type": "string"}}}),
]  # fmt: skip
