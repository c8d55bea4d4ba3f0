"""Requests refused before any route code runs (no API key, a body over the limit) are counted in
``visor_requests_total`` like every other outcome, on each protocol."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.servers import HTTP, KEY, Server


def _refused(server: Server) -> dict[tuple[str, str], float]:
    text = HTTP.get(f"{server.http}/metrics").text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "visor_requests_total" and s.labels["model"] == "_unknown":
                key = (s.labels["protocol"], s.labels["code"])
                out[key] = out.get(key, 0) + s.value
    return out


def test_refusals_before_the_route_are_counted(server: Server) -> None:
    before = _refused(server)
    HTTP.post(f"{server.http}/classify", files={"image": ("a.png", b"x", "image/png")})
    HTTP.post(f"{server.http}/v2/models/tiny/infer", json={"inputs": []})
    big = httpx.post(
        f"{server.http}/v2/models/tiny/infer", content=b"0" * (65 * 1024), headers=dict(KEY)
    )
    assert big.status_code == 413
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(
        name="image", datatype="FP32", shape=[1, 8, 8, 1]
    ).contents.fp32_contents.extend(np.zeros(64).tolist())
    with grpc.insecure_channel(server.grpc) as channel:
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    after = _refused(server)
    for key in (
        ("http", "UNAUTHENTICATED"),
        ("rest_v2", "UNAUTHENTICATED"),
        ("rest_v2", "RESOURCE_EXHAUSTED"),
        ("grpc", "UNAUTHENTICATED"),
    ):
        assert after.get(key, 0) == before.get(key, 0) + 1, (key, before, after)
