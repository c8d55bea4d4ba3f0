"""/classify, /evaluate, /models, limits, API keys and errors against a real server."""

from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.models import LABELS, encode, image_pixels, reference_probabilities
from tests.helpers.servers import HTTP, KEY, Server

KINDS = ["top", "bottom", "left"]


def _png(kind: str) -> bytes:
    return encode(image_pixels(kind))


def _files(*kinds: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{k}.png", _png(k), "image/png")) for k in kinds]


def _probs(body: dict) -> np.ndarray:
    return np.array([[p["probabilities"][lab] for lab in LABELS] for p in body["predictions"]])


def test_multipart_classify_gives_the_models_probabilities(server: Server) -> None:
    r = HTTP.post(f"{server.http}/classify", files=_files(*KINDS), data={"top_k": "2"}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("tiny", 1)
    expected = reference_probabilities(np.stack([image_pixels(k) for k in KINDS]))
    np.testing.assert_allclose(_probs(body), expected, atol=1e-5)
    for kind, prediction in zip(KINDS, body["predictions"], strict=True):
        assert prediction["labels"] == [kind]
        assert prediction["top_k"][0]["label"] == kind
        assert len(prediction["top_k"]) == 2
    assert body["thresholds"] == {lab: 0.5 for lab in LABELS}
    assert "metrics" not in body


def test_json_base64_equals_multipart(server: Server) -> None:
    images = [base64.b64encode(_png(k)).decode() for k in ("left", "top")]
    r = HTTP.post(f"{server.http}/classify", json={"images": images, "model": "tiny"}, headers=KEY)
    m = HTTP.post(f"{server.http}/classify", files=_files("left", "top"), headers=KEY)
    assert r.status_code == m.status_code == 200
    np.testing.assert_array_equal(_probs(r.json()), _probs(m.json()))


def test_options_reach_the_engine(server: Server) -> None:
    data = {"threshold": "0.0001,0.9,0.9", "labels": "top", "version": "1"}
    body = HTTP.post(f"{server.http}/classify", files=_files("top"), data=data, headers=KEY).json()
    assert body["thresholds"] == {"top": 0.0001, "bottom": 0.9, "left": 0.9}
    assert body["predictions"][0]["labels"] == ["top"]
    assert body["metrics"]["accuracy"] == 1.0 and body["metrics"]["samples"] == 1
    retargeted = HTTP.post(
        f"{server.http}/classify",
        json={"images": [base64.b64encode(_png("top")).decode()], "target_precision": 0.9},
        headers=KEY,
    ).json()
    assert retargeted["thresholds"] != {lab: 0.5 for lab in LABELS}


def test_evaluate_reports_metrics_at_the_applied_thresholds(server: Server) -> None:
    data = {"labels": ["top", "bottom", "bottom"]}  # the last one is wrong on purpose
    r = HTTP.post(
        f"{server.http}/evaluate", files=_files("top", "bottom", "left"), data=data, headers=KEY
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accuracy"] == pytest.approx(2 / 3)
    assert body["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert body["per_class"]["bottom"]["recall"] == pytest.approx(0.5)
    assert body["thresholds"] == {lab: 0.5 for lab in LABELS}


def test_models_lists_labels_input_thresholds_metrics_device(server: Server) -> None:
    (entry,) = HTTP.get(f"{server.http}/models", headers=KEY).json()["models"]
    assert entry["name"] == "tiny" and entry["status"] == "ready"
    assert entry["labels"] == LABELS
    assert entry["input"]["height"] == 8 and entry["input"]["color_mode"] == "grayscale"
    assert [c["threshold"] for c in entry["thresholds"]["per_class"]] == [0.5] * 3
    assert entry["test_metrics"]["accuracy"] == 1.0
    assert entry["device"] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"files": [("image", ("x.png", b"not an image", "image/png"))]}, 400, "invalid_input"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "invalid_input"),
        ({"json": {"images": ["***"]}}, 400, "invalid_input"),
        ({"json": {"images": []}}, 400, "invalid_input"),
        ({"files": _files("top"), "data": {"model": "nope"}}, 404, "not_found"),
        ({"files": _files("top"), "data": {"version": "7"}}, 404, "not_found"),
        ({"files": _files("top"), "data": {"top_k": "many"}}, 400, "invalid_input"),
        ({"files": _files("top"), "data": {"threshold": "2"}}, 400, "invalid_input"),
        ({"files": _files("top"), "data": {"labels": "top,left"}}, 400, "invalid_input"),
        ({"files": _files(*KINDS, *KINDS)}, 400, "invalid_input"),  # over 4 images
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 400, "invalid_input"),
    ],
)
def test_bad_requests_get_a_json_error(
    server: Server, kwargs: dict, status: int, code: str
) -> None:
    headers = {**KEY, **kwargs.pop("headers", {})}
    r = HTTP.post(f"{server.http}/classify", headers=headers, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and len(body["error"]) > 10


def test_body_over_the_limit_gets_413_with_a_clear_message(server: Server) -> None:
    big = np.random.default_rng(0).integers(0, 255, 100 * 1024, dtype=np.uint8).tobytes()
    r = HTTP.post(
        f"{server.http}/classify", files=[("image", ("big.png", big, "image/png"))], headers=KEY
    )
    assert r.status_code == 413
    assert r.json()["code"] == "too_large" and "65536" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(10):
            yield b"x" * 16 * 1024

    r = HTTP.post(
        f"{server.http}/classify",
        content=chunks(),
        headers={**KEY, "content-type": "application/json"},
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer key-on"}, {"Authorization": "key-one"}],
)
def test_missing_or_wrong_api_key_gets_401(server: Server, headers: dict) -> None:
    for method, path in (
        ("POST", "/classify"),
        ("GET", "/models"),
        ("POST", "/v2/models/tiny/infer"),
    ):
        r = HTTP.request(
            method,
            f"{server.http}{path}",
            files=_files("top") if method == "POST" else None,
            headers=headers,
        )
        assert r.status_code == 401, (path, r.text)
        assert r.json()["code"] == "unauthenticated"


def test_right_key_in_either_header_and_open_endpoints(server: Server) -> None:
    for headers in ({"Authorization": "Bearer key-one"}, {"x-api-key": "key-two"}):
        assert (
            HTTP.post(f"{server.http}/classify", files=_files("top"), headers=headers).status_code
            == 200
        )
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert HTTP.get(f"{server.http}{path}").status_code == 200, path


def test_grpc_checks_the_same_keys(server: Server) -> None:
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(_png("top"))
    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, metadata=[("x-api-key", "wrong")])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ModelInfer(request, metadata=[("authorization", "Bearer key-one")])
        assert reply.model_name == "tiny"
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_http_and_grpc_give_the_same_probabilities(server: Server) -> None:
    png = _png("left")
    http = HTTP.post(
        f"{server.http}/classify", files=[("image", ("l.png", png, "image/png"))], headers=KEY
    ).json()
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="images", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        png
    )
    request.outputs.add(name="probabilities")
    with grpc.insecure_channel(server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=[("x-api-key", "key-one")]
        )
    grpc_probs = np.array(reply.outputs[0].contents.fp32_contents, np.float32).reshape(1, 3)
    if reply.raw_output_contents:
        grpc_probs = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(1, 3)
    np.testing.assert_array_equal(_probs(http).astype(np.float32), grpc_probs)


def test_metrics_hold_engine_and_bentoml_series(server: Server) -> None:
    HTTP.post(f"{server.http}/classify", files=_files("top"), headers=KEY)
    text = HTTP.get(f"{server.http}/metrics").text
    assert 'visor_requests_total{code="OK",model="tiny",protocol="http",version="1"}' in text
    assert "visor_batch_size_bucket" in text
    assert "bentoml_service_request_total" in text


def test_openapi_page_documents_classify(server: Server) -> None:
    spec = HTTP.get(f"{server.http}/docs.json").json()
    assert "/classify" in spec["paths"] and "/evaluate" in spec["paths"]
    assert HTTP.get(f"{server.http}/").status_code == 200
