"""/docs.json: a valid OpenAPI document that matches the routes, requests and answers of a real
server (tiny model, API keys on, a 64 KiB body limit, a failed second version)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
from openapi_spec_validator import validate

from service import errors
from service.http.middleware import error_response
from service.http.schemas import ErrorCode
from tests.helpers import ROOT
from tests.helpers.models import LABELS, encode, image_pixels, site_repo
from tests.helpers.servers import HTTP, KEY, Server, start_server


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("openapi")
    srv = start_server(work, site_repo(work), api_keys="key-one,key-two", max_body_bytes=64 * 1024)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def doc(api: Server) -> dict[str, Any]:
    r = HTTP.get(f"{api.http}/docs.json")  # no key: the reference must open without one
    assert r.status_code == 200
    return r.json()


def check(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate ``instance`` against a schema of the document (its $refs resolved in it)."""
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(instance)


def answer_schema(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    return doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"][
        "schema"
    ]


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Visor" and doc["info"]["version"] not in ("", "None")
    assert "root_input" not in json.dumps(doc)
    declared = {tag["name"] for tag in doc["tags"]}
    assert {op["tags"][0] for ops in doc["paths"].values() for op in ops.values()} == declared


def served_routes(home: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the BentoML app really has, built in a subprocess."""
    code = (
        "import json; from starlette.routing import Mount\n"
        "from _bentoml_impl.server.app import ServiceAppFactory\n"
        "from service.http.frontend import Visor\n"
        "Visor.inject_config(); app = ServiceAppFactory(Visor, is_main=True)()\n"
        "def walk(routes, prefix=''):\n"
        "    for r in routes:\n"
        "        if isinstance(r, Mount) and hasattr(r.app, 'routes'):\n"
        "            yield from walk(r.app.routes, prefix + r.path)\n"
        "        elif isinstance(r, Mount):\n"
        "            yield 'GET', prefix + r.path + '/{file}'\n"
        "        else:\n"
        "            yield from ((m, prefix + r.path) for m in r.methods if m != 'HEAD')\n"
        "print(json.dumps(sorted(set(walk(app.routes)))))\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return {(m.lower(), p.rstrip("/") or "/") for m, p in json.loads(out.stdout.splitlines()[-1])}


def test_every_route_is_documented_and_nothing_else(doc: dict[str, Any], tmp_path: Path) -> None:
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served_routes(tmp_path)


def test_error_codes_are_those_of_errors_py() -> None:
    def reasons(cls: type[errors.VisorError]) -> set[str]:
        return {cls.reason}.union(*(reasons(c) for c in cls.__subclasses__()))

    assert set(get_args(ErrorCode)) == reasons(errors.VisorError)


def test_every_error_class_matches_its_documented_answer(doc: dict[str, Any]) -> None:
    feedback_only = (errors.UnknownRequest, errors.FeedbackConflict)
    for cls in [errors.VisorError, *errors.VisorError.__subclasses__()]:
        path = "/feedback" if cls in feedback_only else "/classify"
        body = json.loads(error_response(cls("a sentence")).body)
        check(doc, answer_schema(doc, "post", path, cls.http_status), body)
        assert str(cls.http_status) in doc["paths"][path]["post"]["responses"]


def form_from_schema(doc: dict[str, Any], path: str, pngs: list[bytes]) -> tuple[list, dict]:
    """A multipart request built field by field from the operation's schema."""
    body = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = body["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = doc["components"]["schemas"][name]
    # NOTE: values the schema cannot know (this server's model and labels); a new field in the
    # schema fails here until the test gives it a value.
    known = {"model": "tiny", "version": "1", "top_k": "2", "target_precision": "0.8",
             "labels": ",".join(LABELS[: len(pngs)])}  # fmt: skip
    skip = {"threshold", "target_recall"}  # at most one of the three (the schema says so too)
    files = [("image", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
    fields = {k: known[k] for k in schema["properties"] if k != "image" and k not in skip}
    as_json = {"image": ["<binary>"] * len(pngs), **fields}
    for key in ("version", "top_k"):
        as_json[key] = int(as_json[key])
    as_json["target_precision"] = float(as_json["target_precision"])
    check(doc, {"$ref": body["schema"]["$ref"]}, as_json)
    assert body["encoding"]["image"]["contentType"] == "image/*"
    return files, fields


@pytest.mark.parametrize(("path", "answer"), [("/classify", "ClassifyOutput"),
                                              ("/evaluate", "EvaluateOutput")])  # fmt: skip
def test_the_documented_multipart_request_is_accepted(
    api: Server, doc: dict[str, Any], path: str, answer: str
) -> None:
    pngs = [encode(image_pixels(k)) for k in LABELS]
    files, fields = form_from_schema(doc, path, pngs)
    r = HTTP.post(f"{api.http}{path}", files=files, data=fields, headers=KEY)
    assert r.status_code == 200, r.text
    check(doc, answer_schema(doc, "post", path, 200), r.json())
    assert answer_schema(doc, "post", path, 200)["$ref"].endswith(answer)


def test_the_json_form_is_accepted(api: Server, doc: dict[str, Any]) -> None:
    request = {"images": [base64.b64encode(encode(image_pixels("top"))).decode()], "top_k": 1}
    body = doc["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]
    check(doc, body["schema"], request)
    r = HTTP.post(f"{api.http}/classify", json=request, headers=KEY)
    assert r.status_code == 200, r.text
    check(doc, answer_schema(doc, "post", "/classify", 200), r.json())


def _png_part(size: int = 0) -> list:
    return [("image", ("x.png", encode(image_pixels("top")) + b"\0" * size, "image/png"))]


@pytest.mark.parametrize(
    ("status", "code", "request_kwargs"),
    [
        (400, "invalid_input", {"json": {"images": ["not base64!"]}, "headers": KEY}),
        (401, "unauthenticated", {"files": _png_part()}),
        (404, "not_found", {"files": _png_part(), "data": {"model": "nope"}, "headers": KEY}),
        (413, "too_large", {"files": _png_part(70_000), "headers": KEY}),
        (503, "unavailable", {"files": _png_part(), "data": {"version": "2"}, "headers": KEY}),
    ],
)
def test_real_refusals_match_the_documented_error_schema(
    api: Server, doc: dict[str, Any], status: int, code: str, request_kwargs: dict
) -> None:
    r = HTTP.post(f"{api.http}/classify", **request_kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    check(doc, answer_schema(doc, "post", "/classify", status), body)
    assert body["code"] == code and len(body["error"]) > 10


def _infer_request() -> dict[str, Any]:
    png = base64.b64encode(encode(image_pixels("left"))).decode()
    return {
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}],
        "outputs": [{"name": "probabilities"}, {"name": "labels"}],
        "parameters": {"target_recall": 0.5},
    }


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("get", "/models", "/models"),
        ("get", "/models/tiny/1/card", "/models/{name}/{version}/card"),
        ("get", "/models/tiny/2/card", "/models/{name}/{version}/card"),
        ("get", "/v2", "/v2"),
        ("get", "/v2/health/ready", "/v2/health/ready"),
        ("get", "/v2/models/tiny", "/v2/models/{model}"),
        ("get", "/v2/models/tiny/versions/1/ready", "/v2/models/{model}/versions/{version}/ready"),
        ("post", "/v2/models/tiny/infer", "/v2/models/{model}/infer"),
    ],
)
def test_real_answers_match_their_schemas(
    api: Server, doc: dict[str, Any], method: str, path: str, template: str
) -> None:
    request = _infer_request() if method == "post" else None
    if request is not None:
        content = doc["paths"][template]["post"]["requestBody"]["content"]["application/json"]
        check(doc, content["schema"], request)
    r = HTTP.request(method.upper(), f"{api.http}{path}", json=request, headers=KEY)
    assert r.status_code == 200, r.text
    check(doc, answer_schema(doc, method, template, 200), r.json())


def test_empty_optional_fields_mean_not_given(api: Server) -> None:
    """Swagger UI's "Try it out" sends every optional field, empty ones as ``name=``."""
    empty = dict.fromkeys(
        ("model", "version", "top_k", "threshold", "target_precision", "target_recall", "labels"),
        "",
    )
    r = HTTP.post(f"{api.http}/classify", files=_png_part(), data=empty, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["thresholds"] == {label: 0.5 for label in LABELS}  # the calibrated ones
