"""A standard OIP client (tritonclient.grpc) against the real server, unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.helpers.models import encode, image_pixels, reference_probabilities


@pytest.fixture
def client(grpc_server):
    c = triton.InferenceServerClient(grpc_server.url)
    yield c
    c.close()


def _pixels() -> np.ndarray:
    return np.stack([image_pixels(k) for k in ("top", "bottom", "left")])


def test_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "9")
    meta = client.get_model_metadata("tiny", as_json=True)
    assert meta["versions"] == ["1"]
    assert meta["inputs"][0] == {
        "name": "image",
        "datatype": "FP32",
        "shape": ["-1", "8", "8", "1"],
    }
    assert "classification" in client.get_server_metadata(as_json=True)["extensions"]


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_infer_raw_pixels(client, dtype) -> None:
    pixels = _pixels().astype(dtype)
    inp = triton.InferInput("image", list(pixels.shape), "FP32" if dtype == np.float32 else "UINT8")
    inp.set_data_from_numpy(pixels)
    result = client.infer("tiny", [inp])
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), reference_probabilities(pixels), atol=1e-5
    )
    assert result.as_numpy("labels").tolist() == [b"top", b"bottom", b"left"]
    assert result.get_response().model_version == "1"


def test_infer_encoded_images_with_classification_extension(client) -> None:
    images = np.array(
        [encode(image_pixels("left"), "PNG"), encode(image_pixels("top"), "JPEG")], dtype=np.object_
    )
    inp = triton.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(images)
    out = triton.InferRequestedOutput("probabilities", class_count=2)
    result = client.infer("tiny", [inp], outputs=[out])
    rows = result.as_numpy("probabilities")
    assert rows.shape == (2, 2)
    score, index, label = rows[0][0].decode().split(":")
    assert (index, label) == ("2", "left") and 0.5 < float(score) <= 1.0
    assert rows[1][0].decode().endswith(":0:top")


def test_request_parameters(client) -> None:
    inp = triton.InferInput("image", [1, 8, 8, 1], "UINT8")
    inp.set_data_from_numpy(image_pixels("top")[None])
    result = client.infer("tiny", [inp], parameters={"threshold": 0.0})
    assert result.as_numpy("labels")[0].decode().split(",") == ["top", "left", "bottom"]
    with pytest.raises(InferenceServerException, match="target_precision"):
        client.infer("tiny", [inp], parameters={"target_precision": 0.9, "target_recall": 0.9})


def test_unknown_model_is_not_found(client) -> None:
    inp = triton.InferInput("image", [1, 8, 8, 1], "UINT8")
    inp.set_data_from_numpy(image_pixels("top")[None])
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [inp])
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_classification_wider_than_top_k(client) -> None:
    inp = triton.InferInput("image", [1, 8, 8, 1], "UINT8")
    inp.set_data_from_numpy(image_pixels("left")[None])
    out = triton.InferRequestedOutput("probabilities", class_count=5)  # more than 3 classes
    result = client.infer("tiny", [inp], outputs=[out], parameters={"top_k": 1})
    rows = result.as_numpy("probabilities")
    assert rows.shape == (1, 3)
    assert [r.decode().split(":")[2] for r in rows[0]] == ["left", "top", "bottom"]
