"""The real trained digits model (tests/conftest.py ``digits_repo``) served over gRPC, called with
tritonclient: encoded PNGs and raw pixels agree with a plain ONNX Runtime session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from prometheus_client import CollectorRegistry
from svc_helpers import GrpcFixture

from service.codecs import decode_images
from service.metadata import load_metadata
from service.settings import Settings


@pytest.fixture(scope="module")
def digits_server(digits_repo: Path):
    settings = Settings(
        models=digits_repo,
        providers=["CPUExecutionProvider"],
        poll_interval_s=0,
        grpc_port=0,
        host="127.0.0.1",
        max_batch_size=8,
        _env_file=None,
    )
    fx = GrpcFixture(settings, CollectorRegistry())
    yield fx
    fx.stop(0)


def test_digits_over_grpc_match_onnxruntime(digits_repo: Path, digits_server) -> None:
    version_dir = digits_repo / "digits" / "1"
    meta = load_metadata(version_dir)
    pngs = sorted((digits_repo.parent / "data").rglob("*.png"))[::97][:6]
    images = [p.read_bytes() for p in pngs]
    truth = [p.parent.name for p in pngs]
    client = triton.InferenceServerClient(digits_server.url)
    assert client.is_model_ready("digits")

    inp = triton.InferInput(meta.input.name, [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_))
    outs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("labels")]
    result = client.infer("digits", [inp], outputs=outs)
    probs = result.as_numpy("probabilities")

    pixels = decode_images(images, meta.input, 10_000_000)
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run([meta.output.name], {meta.input.name: pixels.astype(np.float32)})[0]
    assert probs.shape == (len(images), len(meta.labels))
    np.testing.assert_allclose(probs, expected, atol=1e-5)

    raw = triton.InferInput(meta.input.name, list(pixels.shape), "UINT8")
    raw.set_data_from_numpy(pixels)
    np.testing.assert_allclose(
        client.infer("digits", [raw]).as_numpy("probabilities"), expected, atol=1e-5
    )

    cls = client.infer(
        "digits", [inp], outputs=[triton.InferRequestedOutput("probabilities", class_count=1)]
    )
    top1 = [row[0].decode().split(":")[2] for row in cls.as_numpy("probabilities")]
    assert top1 == [meta.labels[i] for i in expected.argmax(axis=1)]
    assert set(truth) <= set(meta.labels)
    client.close()
