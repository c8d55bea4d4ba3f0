"""The real trained digits model (tests/conftest.py ``digits_repo``) served over gRPC, called with
tritonclient: encoded PNGs and raw pixels agree with a plain ONNX Runtime session."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from PIL import Image
from prometheus_client import CollectorRegistry

from contract.imaging import decode_image as training_decode
from contract.metadata import load_metadata
from service.settings import Settings
from tests.helpers.servers import GrpcFixture


def _images(digits_repo: Path) -> list[bytes]:
    """A few dataset PNGs when the fixture's data folder is there, plus synthetic images in other
    formats, sizes and colour modes (the server converts and resizes them)."""
    pngs = sorted((digits_repo.parent / "data").rglob("*.png"))[::97][:4]
    rng = np.random.default_rng(0)
    synthetic = []
    for fmt, mode, size in (
        ("PNG", "RGB", (20, 24)),
        ("JPEG", "L", (16, 16)),
        ("WEBP", "RGBA", (9, 9)),
    ):
        pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGBA").convert(mode).save(buf, format=fmt)
        synthetic.append(buf.getvalue())
    return [p.read_bytes() for p in pngs] + synthetic


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
    images = _images(digits_repo)
    client = triton.InferenceServerClient(digits_server.url)
    assert client.is_model_ready("digits")

    inp = triton.InferInput(meta.input.name, [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_))
    outs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("labels")]
    result = client.infer("digits", [inp], outputs=outs)
    probs = result.as_numpy("probabilities")

    # NOTE: the expected pixels come from training's own decoder: served == trained preprocessing.
    spec = meta.input
    pixels = np.stack(
        [
            training_decode(b, spec.color_mode, (spec.height, spec.width), spec.resize_method)
            for b in images
        ]
    )
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
    client.close()
