"""Open Inference Protocol REST under /v2 with the standard clients (tritonclient.http, .grpc)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.helpers.models import LABELS, encode, image_pixels, reference_probabilities
from tests.helpers.servers import HTTP, KEY, Server

PIXELS = np.stack([image_pixels(k) for k in ("top", "bottom", "left")])


@pytest.fixture(scope="module")
def client(server: Server) -> thttp.InferenceServerClient:
    return thttp.InferenceServerClient(server.http.removeprefix("http://"))


def test_health_and_metadata(client: thttp.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny", headers=dict(KEY))
    assert client.is_model_ready("tiny", "1", headers=dict(KEY))
    assert not client.is_model_ready("nope", headers=dict(KEY))
    meta = client.get_server_metadata(headers=dict(KEY))
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("tiny", headers=dict(KEY))
    assert model["versions"] == ["1"]
    assert model["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}
    assert [o["name"] for o in model["outputs"]] == ["probabilities", "labels"]


@pytest.mark.parametrize(
    ("binary", "dtype", "compression"),
    [
        (True, "FP32", None),
        (False, "FP32", None),
        (True, "UINT8", None),
        (False, "UINT8", None),
        (True, "FP32", "gzip"),
        (False, "UINT8", "deflate"),
    ],
)
def test_infer_pixels(
    client: thttp.InferenceServerClient, binary: bool, dtype: str, compression: str | None
) -> None:
    x = PIXELS.astype(np.float32 if dtype == "FP32" else np.uint8)
    tensor = thttp.InferInput("image", list(x.shape), dtype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        thttp.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "labels")
    ]
    result = client.infer(
        "tiny",
        [tensor],
        outputs=outputs,
        headers=dict(KEY),
        request_compression_algorithm=compression,
    )
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), reference_probabilities(PIXELS), atol=1e-5
    )
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("labels")]
    assert labels == ["top", "bottom", "left"]


def test_infer_encoded_images_with_classification_and_parameters(
    client: thttp.InferenceServerClient,
) -> None:
    images = np.array([encode(image_pixels("left")), encode(image_pixels("top"))], dtype=object)
    tensor = thttp.InferInput("images", [2], "BYTES")
    tensor.set_data_from_numpy(images)
    outputs = [thttp.InferRequestedOutput("probabilities", class_count=2)]
    result = client.infer(
        "tiny",
        [tensor],
        outputs=outputs,
        model_version="1",
        headers=dict(KEY),
        parameters={"threshold": 0.99, "labels": "left,top"},
    )
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 2)
    score, index, label = top[0, 0].decode().split(":")
    assert (int(index), label) == (2, "left") and float(score) > 0.99
    metrics = result.get_response()["parameters"]["metrics"]
    assert metrics["accuracy"] == 1.0


def test_errors_follow_the_table(client: thttp.InferenceServerClient) -> None:
    x = PIXELS.astype(np.float32)
    tensor = thttp.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [tensor], headers=dict(KEY))
    assert err.value.status() == "404"
    wrong = thttp.InferInput("image", [1, 4, 4, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny", [wrong], headers=dict(KEY))
    assert err.value.status() == "400" and "shape" in err.value.message()


def test_a_compressed_bomb_is_refused(server: Server) -> None:
    bomb = gzip.compress(b"0" * (2 * 1024 * 1024))  # 2 MiB of zeros, a few KiB compressed
    r = HTTP.post(
        f"{server.http}/v2/models/tiny/infer",
        content=bomb,
        headers={**KEY, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["code"] == "too_large"


def test_malformed_binary_body_is_400(server: Server) -> None:
    body = (
        b'{"inputs":[{"name":"image","datatype":"FP32","shape":[1,8,8,1],'
        b'"parameters":{"binary_data_size":256}}]}'
    )
    r = HTTP.post(
        f"{server.http}/v2/models/tiny/infer",
        content=body + b"\0" * 10,
        headers={**KEY, "Inference-Header-Content-Length": str(len(body))},
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_input"


def test_rest_and_grpc_clients_agree(client: thttp.InferenceServerClient, server: Server) -> None:
    images = np.array([encode(image_pixels("bottom"))], dtype=object)
    rest_in = thttp.InferInput("images", [1], "BYTES")
    rest_in.set_data_from_numpy(images)
    rest = client.infer("tiny", [rest_in], headers=dict(KEY)).as_numpy("probabilities")
    grpc_client = tgrpc.InferenceServerClient(server.grpc)
    grpc_in = tgrpc.InferInput("images", [1], "BYTES")
    grpc_in.set_data_from_numpy(images)
    remote = grpc_client.infer("tiny", [grpc_in], headers={"x-api-key": "key-one"})
    np.testing.assert_array_equal(rest, remote.as_numpy("probabilities"))
    assert rest.shape == (1, len(LABELS))
