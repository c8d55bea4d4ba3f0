"""Raw-stub clients: malformed requests, contents (non-raw) tensors, streaming, limits."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.models import encode, image_pixels
from tests.helpers.servers import GrpcFixture, hold_batches


def request(
    datatype: str = "UINT8", shape=(1, 8, 8, 1), raw: bytes | None = None, **kw
) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(
        model_name=kw.pop("model", "tiny"), model_version=kw.pop("version", "")
    )
    req.inputs.add(name="image", datatype=datatype, shape=list(shape))
    if raw is None:
        raw = image_pixels("top")[None].tobytes()
    req.raw_input_contents.append(raw)
    for key, value in kw.items():
        param = req.parameters[key]
        if isinstance(value, str):
            param.string_param = value
        else:
            param.double_param = value
    return req


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _with_output(name: str) -> pb.ModelInferRequest:
    req = request()
    req.outputs.add(name=name)
    return req


MALFORMED = {
    "wrong shape": (request(shape=(1, 8, 8, 3), raw=bytes(192)), "shape"),
    "wrong dtype": (request(datatype="INT32", raw=bytes(256)), "INT32"),
    "byte count": (request(raw=bytes(10)), "bytes"),
    "empty batch": (request(shape=(0, 8, 8, 1), raw=b""), "empty"),
    "over the limit": (request(shape=(300, 8, 8, 1), raw=bytes(300 * 64)), "limit"),
    "nan pixels": (
        request(datatype="FP32", raw=np.full((1, 8, 8, 1), np.nan, "<f4").tobytes()),
        "NaN",
    ),
    "undecodable": (
        request(datatype="BYTES", shape=(1,), raw=_bytes_tensor(b"not an image")),
        "decoded",
    ),
    "truncated bytes": (request(datatype="BYTES", shape=(1,), raw=b"\x09\x00"), "truncated"),
    "threshold > 1": (request(threshold=1.5), "threshold"),
    "per-class length": (request(threshold="[0.5, 0.5]"), "threshold"),
    "both targets": (request(target_precision=0.9, target_recall=0.8), "at most one"),
    "target out of range": (request(target_recall=-0.1), "target_recall"),
    "top_k not a number": (request(top_k="many"), "top_k"),
    "unknown output": (_with_output("logits"), "unknown output"),
    "unknown version": (request(version="7"), "version"),
    "unknown model": (request(model="nope"), "nope"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_then_normal_one(stub, case: str) -> None:
    req, words = MALFORMED[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=20)
    expected = (
        grpc.StatusCode.NOT_FOUND
        if case.startswith("unknown m") or case == "unknown version"
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    assert err.value.code() == expected, err.value.details()
    assert words.lower() in err.value.details().lower()
    ok = stub.ModelInfer(request(), timeout=20)
    assert ok.outputs[0].name == "probabilities"


def test_contents_tensors_answer_with_contents(stub) -> None:
    req = pb.ModelInferRequest(model_name="tiny")
    tensor = req.inputs.add(name="image", datatype="FP32", shape=[1, 8, 8, 1])
    tensor.contents.fp32_contents.extend(image_pixels("bottom").astype(np.float32).ravel().tolist())
    req.outputs.add(name="labels")
    resp = stub.ModelInfer(req, timeout=20)
    assert not resp.raw_output_contents
    assert list(resp.outputs[0].contents.bytes_contents) == [b"bottom"]


def test_ground_truth_gives_metrics(stub) -> None:
    import json

    req = request(labels="bottom")
    resp = stub.ModelInfer(req, timeout=20)
    metrics = json.loads(resp.parameters["metrics"].string_param)
    assert metrics["accuracy"] == 0.0 and metrics["samples"] == 1


def test_stream_answers_every_request_and_reports_errors(stub) -> None:
    reqs = [
        request(),
        request(model="nope"),
        request(datatype="BYTES", shape=(1,), raw=_bytes_tensor(encode(image_pixels("left")))),
    ]
    for i, r in enumerate(reqs):
        r.id = f"r{i}"
    answers = {a.infer_response.id: a for a in stub.ModelStreamInfer(iter(reqs), timeout=30)}
    assert set(answers) == {"r0", "r1", "r2"}
    assert answers["r0"].error_message == "" and answers["r2"].error_message == ""
    assert answers["r1"].error_message.startswith("NOT_FOUND")
    labels = answers["r2"].infer_response.raw_output_contents[1]
    assert labels[4:] == b"left"


def test_message_over_the_limit_is_resource_exhausted(make_settings, registry) -> None:
    fx = GrpcFixture(make_settings(grpc_max_message_bytes=64 * 1024), registry)
    try:
        with grpc.insecure_channel(fx.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            big = request(shape=(2000, 8, 8, 1), raw=bytes(2000 * 64))
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(big, timeout=20)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.ModelInfer(request(), timeout=20).model_name == "tiny"
    finally:
        fx.stop(0)


def test_concurrent_grpc_requests_share_batches(make_settings, registry) -> None:
    import threading

    # NOTE: one batch at a time, so everything arriving while it runs must wait and group.
    fx = GrpcFixture(make_settings(inference_threads=1), registry)
    lv = fx.engine.repository.latest["tiny"]
    gate, entered = hold_batches(lv)  # hold the next batch inside the backend
    labels = {"model": "tiny", "version": "1"}
    channel = grpc.insecure_channel(fx.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        first = stub.ModelInfer.future(request(), timeout=30)
        assert entered.wait(20)
        rest = [stub.ModelInfer.future(request(), timeout=30) for _ in range(6)]
        pause = threading.Event()
        for _ in range(2000):  # liveness only: until all six wait behind the held batch
            if registry.get_sample_value("visor_queue_depth", labels) == 6:
                break
            pause.wait(0.01)
        gate.set()
        for call in [first, *rest]:
            assert call.result(timeout=20).outputs[0].name == "probabilities"
    finally:
        gate.set()
        channel.close()
        fx.stop(0)
    assert registry.get_sample_value("visor_batch_size_count", labels) == 2
    assert registry.get_sample_value("visor_batch_size_sum", labels) == 7
