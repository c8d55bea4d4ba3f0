"""The same Open Inference Protocol requests over gRPC, REST JSON and REST binary: same verdicts.

Every case is sent over each wire it can be spelled on (typed gRPC contents, gRPC
raw_input_contents, REST JSON, REST with binary tensors). All wires must give the same error class
or the same numbers; none may answer 5xx, INTERNAL or UNKNOWN; and where the case names the
expected class, that is what each wire gives. After the matrix a good request is still answered.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.models import reference_probabilities, tiny_repo
from tests.helpers.servers import Server, start_server
from tests.helpers.wires import WIRES, Case, Input, Verdict, send

BAD = "INVALID_ARGUMENT"
RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buf, format=fmt)
    return buf.getvalue()


def fp32(n: int = 1, **kw) -> Input:
    return Input(
        datatype="FP32", shape=[n, 8, 8, 1], data=PIXELS[:n].astype(float).ravel().tolist(), **kw
    )


def uint8(n: int = 1, **kw) -> Input:
    return Input(datatype="UINT8", shape=[n, 8, 8, 1], data=PIXELS[:n].ravel().tolist(), **kw)


def encoded(n: int = 1, fmt: str = "PNG", **kw) -> Input:
    return Input(datatype="BYTES", shape=[n], data=[_png(PIXELS[i], fmt) for i in range(n)], **kw)


def truth(*labels: str) -> Input:
    return Input(
        name="labels", datatype="BYTES", shape=[len(labels)], data=[s.encode() for s in labels]
    )


def good_cases() -> Iterator[Case]:
    outputs = {
        "default": None,
        "probs": [{"name": "probabilities"}],
        "labels": [{"name": "labels"}],
        "both": [{"name": "labels"}, {"name": "probabilities"}],
        "class1": [{"name": "probabilities", "parameters": {"classification": 1}}],
        "class3": [{"name": "labels", "parameters": {"classification": 3}}],
        "class9": [{"name": "probabilities", "parameters": {"classification": 9}}],
        "class0": [{"name": "probabilities", "parameters": {"classification": 0}}],
    }
    for kind, make in (("fp32", fp32), ("uint8", uint8), ("png", encoded)):
        for n in (1, 2, 3):
            for oname, outs in outputs.items():
                yield Case(f"ok-{kind}-n{n}-{oname}", [make(n)], outputs=outs)
    yield Case("ok-jpeg", [encoded(2, "JPEG")])
    params_ok = {
        "top_k-1": {"top_k": 1},
        "top_k-string": {"top_k": "2"},
        "threshold": {"threshold": 0.4},
        "threshold-string": {"threshold": "0.4"},
        "threshold-per-class": {"threshold": "0.2,0.3,0.4"},
        "threshold-bracketed": {"threshold": "[0.2, 0.3, 0.4]"},
        "target-precision": {"target_precision": 0.8},
        "target-recall": {"target_recall": 0.6},
        "target-string": {"target_recall": "0.6"},
        "labels-param": {"labels": "top"},
    }
    for pid, params in params_ok.items():
        yield Case(f"ok-param-{pid}", [fp32(1)], params=params)
    yield Case(
        "ok-threshold-list",
        [fp32(1)],
        params={"threshold": [0.2, 0.3, 0.4]},
        grpc_params={"threshold": "[0.2,0.3,0.4]"},
    )
    yield Case(
        "ok-top_k-1-with-class3",
        [fp32(1)],
        params={"top_k": 1},
        outputs=[{"name": "labels", "parameters": {"classification": 3}}],
    )
    yield Case("ok-truth-input", [fp32(2), truth("top", "left")])
    yield Case("ok-version-1", [fp32(1)], version="1")


def bad_cases() -> Iterator[Case]:
    json_only = ("grpc", "rest_json")  # values a raw/binary tensor cannot spell
    for dt in ("INT32", "FP64", "BOOL", "", "fp32", "STRING"):
        yield Case(f"datatype-{dt or 'empty'}", [Input(datatype=dt, data=[0.0] * 64)], expect=BAD)
    shapes = {
        "rank3": [1, 8, 8],
        "channels3": [1, 8, 8, 3],
        "claims-two": [2, 8, 8, 1],
        "negative": [1, -1, 8, 1],
        "empty-batch": [0, 8, 8, 1],
        "no-dims": [],
        "nine-dims": [1, 8, 8, 1, 1, 1, 1, 1, 1],
        "huge": [1 << 20, 1 << 20],
    }
    for sid, shape in shapes.items():
        wires = ("grpc", "rest_json") if sid in ("negative",) else WIRES
        yield Case(
            f"shape-{sid}",
            [Input(shape=shape, data=PIXELS[:1].astype(float).ravel().tolist())],
            expect=BAD,
            wires=wires,
        )
    yield Case(
        "bytes-shape-claims-million",
        [Input(datatype="BYTES", shape=[1_000_000], data=[_png(PIXELS[0])])],
        expect=BAD,
    )
    yield Case(
        "bytes-shape-2-holds-1",
        [Input(datatype="BYTES", shape=[2], data=[_png(PIXELS[0])])],
        expect=BAD,
    )
    yield Case(
        "bytes-not-image", [Input(datatype="BYTES", shape=[1], data=[b"not an image"])], expect=BAD
    )
    yield Case("bytes-empty-image", [Input(datatype="BYTES", shape=[1], data=[b""])], expect=BAD)
    yield Case("no-data", [Input(data=None)], expect=BAD)
    yield Case("no-inputs", [], expect=BAD)
    yield Case(
        "uint8-300", [Input(datatype="UINT8", data=[300] + [0] * 63)], expect=BAD, wires=json_only
    )
    yield Case(
        "uint8-fraction",
        [Input(datatype="UINT8", data=[2.5] + [0] * 63)],
        expect=BAD,
        wires=("rest_json",),
    )
    yield Case(
        "uint8-negative",
        [Input(datatype="UINT8", data=[-1] + [0] * 63)],
        expect=BAD,
        wires=("rest_json",),
    )
    yield Case("fp32-overflow", [Input(data=[1e39] + [0.0] * 63)], expect=BAD, wires=("rest_json",))
    yield Case("fp32-too-few", [Input(data=[0.0] * 63)], expect=BAD)
    yield Case("fp32-too-many", [Input(data=[0.0] * 65)], expect=BAD)
    yield Case("two-images", [fp32(1), fp32(1, name="other")], expect=BAD)
    yield Case("duplicate-input", [fp32(1), fp32(1)], expect=BAD)
    yield Case("empty-input-name", [fp32(1, name="")], expect=BAD)
    yield Case(
        "truth-not-bytes",
        [fp32(1), Input(name="labels", datatype="FP32", shape=[1], data=[1.0])],
        expect=BAD,
    )
    yield Case("truth-wrong-count", [fp32(2), truth("top")], expect=BAD)
    yield Case("truth-unknown-label", [fp32(1), truth("cat")], expect=BAD)
    yield Case("truth-twice", [fp32(1), truth("top")], params={"labels": "top"}, expect=BAD)
    bad_params = {
        "unknown-topk": {"topk": 2},
        "unknown-treshold": {"treshold": 0.5},
        "unknown-foo": {"foo": "bar"},
        "top_k-fraction": {"top_k": 2.5},
        "top_k-zero": {"top_k": 0},
        "top_k-negative": {"top_k": -1},
        "top_k-bool": {"top_k": True},
        "top_k-text": {"top_k": "abc"},
        "top_k-fraction-text": {"top_k": "2.5"},
        "threshold-over-one": {"threshold": 1.5},
        "threshold-negative": {"threshold": -0.1},
        "threshold-text": {"threshold": "abc"},
        "threshold-nan": {"threshold": "nan"},
        "threshold-inf": {"threshold": "inf"},
        "threshold-nested": {"threshold": "[[0.5]]"},
        "threshold-deep": {"threshold": "[" * 5000 + "0.5" + "]" * 5000},
        "threshold-count": {"threshold": "0.1,0.2"},
        "threshold-empty-list": {"threshold": "[]"},
        "threshold-bool": {"threshold": True},
        "target-precision-2": {"target_precision": 2.0},
        "target-precision-text": {"target_precision": "x"},
        "target-recall-negative": {"target_recall": -0.5},
        "threshold-and-target": {"threshold": 0.5, "target_precision": 0.9},
        "both-targets": {"target_precision": 0.9, "target_recall": 0.9},
        "labels-deep": {"labels": "[" * 5000 + "]" * 5000},
        "labels-unknown": {"labels": "cat"},
        "labels-count": {"labels": "top,left"},
        "binary-output-text": {"binary_data_output": "yes"},
    }
    for pid, params in bad_params.items():
        yield Case(f"param-{pid}", [fp32(1)], params=params, expect=BAD)
    bad_outputs = {
        "unknown": [{"name": "probs"}],
        "twice": [{"name": "probabilities"}, {"name": "probabilities"}],
        "class-negative": [{"name": "labels", "parameters": {"classification": -1}}],
        "class-fraction": [{"name": "labels", "parameters": {"classification": 2.5}}],
        "class-text": [{"name": "labels", "parameters": {"classification": "abc"}}],
        "class-bool": [{"name": "labels", "parameters": {"classification": True}}],
        "unknown-param": [{"name": "labels", "parameters": {"foo": 1}}],
        "binary-text": [{"name": "labels", "parameters": {"binary_data": "yes"}}],
    }
    for oid, outs in bad_outputs.items():
        yield Case(f"output-{oid}", [fp32(1)], outputs=outs, expect=BAD)
    versions = {
        "abc": BAD,
        "²": BAD,
        "0": BAD,
        "-1": BAD,
        "1.0": BAD,
        "7": "NOT_FOUND",
        "99999999999999999999": BAD,
    }
    for vid, expect in versions.items():
        yield Case(f"version-{vid}", [fp32(1)], version=vid, expect=expect)
    yield Case("model-unknown", [fp32(1)], model="nope", expect="NOT_FOUND")
    yield Case("model-10kb-name", [fp32(1)], model="m" * 10_000, expect=BAD)
    yield Case("model-unicode", [fp32(1)], model="modèle", expect="NOT_FOUND")


CASES = [*good_cases(), *bad_cases()]


def test_the_matrix_is_large() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def conformance_server(workdir: Path) -> Iterator[Server]:
    srv = start_server(workdir, tiny_repo(workdir / "conf"), max_tensor_elements=1 << 22)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clients(
    conformance_server: Server,
) -> Iterator[tuple[pb_grpc.GRPCInferenceServiceStub, httpx.Client]]:
    channel = grpc.insecure_channel(
        conformance_server.grpc, options=[("grpc.max_send_message_length", 64 << 20)]
    )
    with httpx.Client(timeout=60) as client:
        yield pb_grpc.GRPCInferenceServiceStub(channel), client
    channel.close()


def _verdicts(case: Case, server: Server, clients) -> dict[str, Verdict]:
    stub, client = clients
    return {wire: send(case, wire, server.http, stub, client) for wire in case.wires}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_wire_gives_the_same_verdict(case: Case, conformance_server: Server, clients) -> None:
    verdicts = _verdicts(case, conformance_server, clients)
    for wire, v in verdicts.items():
        assert v.code not in ("INTERNAL", "UNKNOWN") and not v.code.startswith("HTTP 5"), (wire, v)
        assert v.code == case.expect, (wire, v)
        if v.code != "OK":
            assert v.message, f"{wire}: an error without a message"
    first_wire, first = next(iter(verdicts.items()))
    for wire, v in verdicts.items():
        assert v.same(first), f"{wire} disagrees with {first_wire}:\n{v}\n{first}"


def test_good_answers_are_the_models_numbers(conformance_server: Server, clients) -> None:
    """The OK verdicts are not only equal to each other: they are the right probabilities."""
    case = Case("numbers", [uint8(3)], outputs=[{"name": "probabilities"}])
    want = reference_probabilities(PIXELS.astype(np.float32)).ravel()
    for wire, v in _verdicts(case, conformance_server, clients).items():
        assert v.code == "OK", (wire, v)
        np.testing.assert_allclose(v.outputs[0][3], want, atol=1e-5, err_msg=wire)


def test_classification_lists_k_classes_on_every_wire(conformance_server: Server, clients) -> None:
    case = Case(
        "k",
        [fp32(1)],
        params={"top_k": 1},
        outputs=[{"name": "labels", "parameters": {"classification": 3}}],
    )
    for wire, v in _verdicts(case, conformance_server, clients).items():
        _, _, shape, values = v.outputs[0]
        assert shape == (1, 3) and len(values) == 3, wire


def test_invalid_utf8_in_a_grpc_string_is_invalid_argument(
    conformance_server: Server, clients
) -> None:
    for field in ("model_name", "input name"):
        req = pb.ModelInferRequest(model_name="tiny")
        req.inputs.add(
            name="image", datatype="FP32", shape=[1, 8, 8, 1]
        ).contents.fp32_contents.extend([0.0] * 64)
        data = req.SerializeToString()
        data = (
            data.replace(b"tiny", b"ti\xffy")
            if field == "model_name"
            else data.replace(b"image", b"im\xffge")
        )
        with grpc.insecure_channel(conformance_server.grpc) as channel:
            raw = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.RpcError) as err:
                raw(data, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert "protobuf" in err.value.details()


REST_ONLY = [
    ("deep-nesting", b"[" * 100_000, {}),
    ("inputs-not-objects", b'{"inputs": [1]}', {}),
    ("parameters-string", json.dumps({"inputs": [], "parameters": "x"}).encode(), {}),
    ("outputs-string", json.dumps({"inputs": [], "outputs": "probabilities"}).encode(), {}),
    (
        "name-list",
        json.dumps(
            {"inputs": [{"name": ["a"], "datatype": "FP32", "shape": [1], "data": [1]}]}
        ).encode(),
        {},
    ),
    (
        "datatype-number",
        json.dumps(
            {"inputs": [{"name": "image", "datatype": 5, "shape": [1], "data": [1]}]}
        ).encode(),
        {},
    ),
    (
        "shape-strings",
        json.dumps(
            {"inputs": [{"name": "image", "datatype": "FP32", "shape": ["1"], "data": [1]}]}
        ).encode(),
        {},
    ),
    (
        "data-strings",
        json.dumps(
            {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": ["a"]}]}
        ).encode(),
        {},
    ),
    ("unknown-field", json.dumps({"inputs": [], "topk": 3}).encode(), {}),
    (
        "unknown-input-field",
        json.dumps(
            {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1], "dat": 1}]}
        ).encode(),
        {},
    ),
    (
        "header-length-superscript",
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": b"\xb2"},
    ),  # "²", latin-1
    ("header-length-past-body", b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}),
    (
        "binary-size-past-body",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": [1],
                        "parameters": {"binary_data_size": 99},
                    }
                ]
            }
        ).encode(),
        {"Inference-Header-Content-Length": "0"},
    ),
    ("not-json", b"\xff\xfe", {}),
    ("array-body", b"[]", {}),
]


@pytest.mark.parametrize(
    ("body", "headers"), [(b, h) for _, b, h in REST_ONLY], ids=[i for i, _, _ in REST_ONLY]
)
def test_rest_structural_errors_are_400(
    body: bytes, headers: dict, conformance_server: Server
) -> None:
    if headers.get("Inference-Header-Content-Length") == "0":
        headers = {"Inference-Header-Content-Length": str(len(body))}
    resp = httpx.post(
        f"{conformance_server.http}/v2/models/tiny/infer", content=body, headers=headers, timeout=60
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]


CLASSIFY_JSON = [
    ("deep-nesting", b"[" * 100_000),
    ("version-huge", b'{"images": ["aGk="], "version": 1e400}'),
    ("top_k-huge", b'{"images": ["aGk="], "top_k": 1e400}'),
    ("top_k-fraction", b'{"images": ["aGk="], "top_k": 2.5}'),
    ("unknown-field", b'{"images": ["aGk="], "topk": 2}'),
    ("model-number", b'{"images": ["aGk="], "model": 5}'),
]


@pytest.mark.parametrize("body", [b for _, b in CLASSIFY_JSON], ids=[i for i, _ in CLASSIFY_JSON])
def test_classify_json_errors_are_400(body: bytes, conformance_server: Server) -> None:
    resp = httpx.post(
        f"{conformance_server.http}/classify",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text


def test_refusals_are_counted_on_every_route(conformance_server: Server, clients) -> None:
    """visor_requests_total counts a request refused while decoding, on each protocol."""
    from prometheus_client.parser import text_string_to_metric_families

    def refused() -> dict[str, float]:
        text = httpx.get(f"{conformance_server.http}/metrics", timeout=30).text
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            if fam.name == "visor_requests":
                for s in fam.samples:
                    if s.name == "visor_requests_total" and s.labels["code"] == BAD:
                        out[s.labels["protocol"]] = out.get(s.labels["protocol"], 0) + s.value
        return out

    before = refused()
    stub, client = clients
    send(Case("x", [fp32(1)], params={"topk": 1}), "grpc", conformance_server.http, stub, client)
    httpx.post(f"{conformance_server.http}/v2/models/tiny/infer", content=b"[" * 1000, timeout=60)
    httpx.post(
        f"{conformance_server.http}/classify",
        content=b"{",
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    after = refused()
    for protocol in ("grpc", "rest_v2", "http"):
        assert after.get(protocol, 0) == before.get(protocol, 0) + 1, (protocol, before, after)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(["top_k", "threshold", "target_precision", "target_recall", "labels", "x"]),
        json_values,
        max_size=3,
    ),
    shape=json_values,
    datatype=st.sampled_from(["FP32", "UINT8", "BYTES", "INT8"]) | json_values,
    outputs=json_values,
)
def test_hostile_rest_requests_never_break_the_server(
    params, shape, datatype, outputs, conformance_server: Server
) -> None:
    """Generated bodies: any answer but a 5xx, and the answer is JSON with an error sentence."""
    body = {
        "inputs": [{"name": "image", "datatype": datatype, "shape": shape, "data": [0] * 64}],
        "parameters": params,
        "outputs": outputs,
    }
    resp = httpx.post(
        f"{conformance_server.http}/v2/models/tiny/infer",
        content=json.dumps(body).encode(),
        timeout=60,
    )
    assert resp.status_code < 500, resp.text
    if resp.status_code != 200:
        assert resp.json()["error"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(["top_k", "threshold", "target_precision", "target_recall", "labels", "y"]),
        st.none()
        | st.booleans()
        | st.integers(-(2**62), 2**62)
        | st.floats()
        | st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
        max_size=3,
    )
)
def test_hostile_grpc_parameters_never_break_the_server(
    params, conformance_server: Server, clients
) -> None:
    stub, client = clients
    params = {k: v for k, v in params.items() if v is not None}
    v = send(Case("h", [fp32(1)], params=params), "grpc", conformance_server.http, stub, client)
    assert v.code in ("OK", BAD), v


def test_still_serving_after_the_matrix(conformance_server: Server, clients) -> None:
    stub, client = clients
    for wire in WIRES:
        v = send(Case("after", [fp32(2)]), wire, conformance_server.http, stub, client)
        assert v.code == "OK", (wire, v)
