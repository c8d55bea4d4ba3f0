"""REST inference's fast path (service/http/fastpath.py) answers exactly what BentoML's full
stack answers: two real servers, one with ``VISOR_HTTP_FAST_INFER=false``, get the same
requests (written ones and hypothesis-generated hostile ones) and must give the same status,
content type and body, and count the same request metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.http.fastpath import INFER_PATH, FastPathPlan, InferFastPath
from tests.helpers.models import H, W, tiny_repo
from tests.helpers.servers import Server, start_server

KEY = {"X-API-Key": "key-one"}
LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def pair(workdir: Path) -> Iterator[tuple[Server, Server]]:
    common = {"api_keys": "key-one", "max_body_bytes": LIMIT, "max_images_per_request": 4}
    fast = start_server(workdir, tiny_repo(workdir / "fast"), **common)
    try:
        slow = start_server(workdir, tiny_repo(workdir / "slow"), http_fast_infer=False, **common)
    except BaseException:
        fast.stop()
        raise
    yield fast, slow
    fast.stop()
    slow.stop()


def _masked(response: httpx.Response) -> tuple[int, str, bytes]:
    # request ids are signed per server: the same request gets a different one on each
    body = re.sub(rb'"request_id": "[^"]*"', b'"request_id": "-"', response.content)
    body = re.sub(rb'"id": "[^"]*"', b'"id": "-"', body)
    return response.status_code, response.headers.get("content-type", ""), body


def _both(pair, method: str, path: str, **kwargs) -> tuple:
    answers = [httpx.request(method, f"{s.http}{path}", timeout=30, **kwargs) for s in pair]
    fast, slow = (_masked(a) for a in answers)
    assert fast == slow, (path, fast, slow)
    return fast


def _tensor(n: int = 1) -> dict:
    pixels = np.random.default_rng(n).random((n, H, W, 1), dtype=np.float32)
    return {"name": "image", "shape": list(pixels.shape), "datatype": "FP32",
            "data": pixels.ravel().tolist()}  # fmt: skip


def test_written_requests_get_the_same_answers(pair) -> None:
    infer = "/v2/models/tiny/infer"
    assert _both(pair, "POST", infer, json={"inputs": [_tensor()]}, headers=KEY)[0] == 200
    assert _both(pair, "POST", "/v2/models/tiny/versions/1/infer", json={"inputs": [_tensor(2)]},
                 headers=KEY)[0] == 200  # fmt: skip
    pixels = np.ones((1, H, W, 1), np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, H, W, 1], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(pixels)}}],
                       "outputs": [{"name": "probabilities",
                                    "parameters": {"binary_data": True}}]}).encode()  # fmt: skip
    binary = _both(
        pair, "POST", infer, content=head + pixels,
        headers={**KEY, "Inference-Header-Content-Length": str(len(head))},
    )  # fmt: skip
    assert binary[:2] == (200, "application/octet-stream")
    refusals = [
        ("POST", infer, {"json": {"inputs": [_tensor()]}}, 401),  # no key
        ("POST", infer, {"content": b"{not json", "headers": KEY}, 400),
        ("POST", infer, {"json": {"inputs": [_tensor(5)]}, "headers": KEY}, 400),  # > 4 images
        ("POST", infer, {"content": b"x" * (LIMIT + 1), "headers": KEY}, 413),
        ("POST", "/v2/models/nope/infer", {"json": {"inputs": [_tensor()]}, "headers": KEY}, 404),
        ("POST", "/v2/models/tiny/versions/7/infer", {"json": {"inputs": [_tensor()]},
                                                      "headers": KEY}, 404),
        ("GET", infer, {"headers": KEY}, 405),  # not an inference: BentoML's router answers
        ("POST", "/v2/models/tiny/infer/", {"json": {}, "headers": KEY}, 307),  # redirect
    ]
    for method, path, kwargs, status in refusals:
        assert _both(pair, method, path, **kwargs)[0] == status, path


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        st.binary(max_size=256),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["inputs", "outputs", "id", "parameters", "name",
                                               "shape", "datatype", "data"]), inner, max_size=4),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    header=st.one_of(st.none(), st.integers(-5, 300).map(str), st.text(max_size=4)),
)
def test_hostile_bodies_get_the_same_answers(pair, body: bytes, header: str | None) -> None:
    headers = dict(KEY)
    if header is not None and header.isascii() and header.isprintable():
        headers["Inference-Header-Content-Length"] = header
    status = _both(pair, "POST", "/v2/models/tiny/infer", content=body, headers=headers)[0]
    assert status in (200, 400), status


def test_both_count_the_same_request_metrics(pair) -> None:
    def infer_counts(server: Server) -> dict[str, float]:
        text = httpx.get(f"{server.http}/metrics", timeout=10).text
        pattern = r'^bentoml_service_request_total\{endpoint="/v2/models/tiny/infer",' \
                  r'http_response_code="(\d+)".*\} (\S+)$'  # fmt: skip
        return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}

    for _ in range(3):
        _both(pair, "POST", "/v2/models/tiny/infer", json={"inputs": [_tensor()]}, headers=KEY)
    fast, slow = (infer_counts(s) for s in pair)
    assert fast == slow and fast.get("200", 0) >= 3, (fast, slow)


# --- the dispatch itself, on plain ASGI apps -------------------------------------------------


def _called(path: str, method: str = "POST") -> tuple[str, dict]:
    seen: list[tuple[str, dict]] = []

    def recorder(name: str):
        async def app(scope, receive, send) -> None:
            seen.append((name, dict(scope.get("path_params", {}))))

        return app

    dispatch = InferFastPath(recorder("bentoml"), recorder("fast"))
    asyncio.run(dispatch({"type": "http", "method": method, "path": path}, None, None))
    return seen[0]


def test_only_inference_posts_take_the_fast_path() -> None:
    assert _called("/v2/models/m/infer") == ("fast", {"model": "m"})
    assert _called("/v2/models/m/versions/3/infer") == ("fast", {"model": "m", "version": "3"})
    for path in ("/v2/models/m/infer/", "/v2/models/m/ready", "/classify",
                 "/v2/models//infer", "/v2/models/a/b/infer", "/x/v2/models/m/infer"):  # fmt: skip
        assert _called(path)[0] == "bentoml", path
    assert _called("/v2/models/m/infer", method="GET")[0] == "bentoml"
    assert INFER_PATH.fullmatch("/v2/models/m/versions/2/infer")


def test_a_layer_with_work_to_do_keeps_the_full_stack() -> None:
    on = FastPathPlan(enabled=True, tracing=False, access_log=False, cors=False,
                      max_concurrency=None)  # fmt: skip
    assert on.wanted and on.why_not == ""
    for change, reason in [
        ({"enabled": False}, "VISOR_HTTP_FAST_INFER=false"),
        ({"tracing": True}, "tracing"),
        ({"access_log": True}, "the access log"),
        ({"cors": True}, "CORS"),
        ({"max_concurrency": 8}, "a concurrency cap"),
    ]:
        plan = FastPathPlan(**{**on.__dict__, **change})
        assert not plan.wanted and plan.why_not == reason


def test_the_fast_path_steps_aside_for_cors_switched_on_in_bentomls_configuration(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CORS is BentoML's (no Visor setting): inference must cross it as the other routes do,
    # so the fast path reads the switch where BentoML's app reads it
    origin = "https://app.example"
    monkeypatch.setenv(
        "BENTOML_CONFIG_OPTIONS",
        "services.visor.http.cors.enabled=true "
        f"services.visor.http.cors.access_control_allow_origins[0]={origin}",
    )
    server = start_server(workdir, tiny_repo(workdir / "cors"))
    try:
        answer = httpx.post(
            f"{server.http}/v2/models/tiny/infer",
            json={"inputs": [_tensor()]},
            headers={"Origin": origin},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("access-control-allow-origin") == origin
    finally:
        server.stop()
