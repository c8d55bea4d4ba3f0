"""End to end with the real trained digits model: one process, both protocols, same answer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from contract.calibration import CurveCounts, choose
from contract.metadata import load_metadata
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.servers import HTTP, start_server


def _digit_png(index: int = 7) -> bytes:
    """A real handwritten digit (scikit-learn's 8x8 set) as a PNG; the server resizes it."""
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[index] * (255 / 16)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return buf.getvalue()


def test_http_classify_and_grpc_agree_on_a_digit_png(digits_repo: Path, tmp_path: Path) -> None:
    png = _digit_png()
    server = start_server(tmp_path, digits_repo)
    try:
        r = HTTP.post(f"{server.http}/classify", files=[("image", ("digit.png", png, "image/png"))])
        assert r.status_code == 200, r.text
        body = r.json()
        labels = HTTP.get(f"{server.http}/models").json()["models"][0]["labels"]
        http_probs = np.array([body["predictions"][0]["probabilities"][lab] for lab in labels])

        request = pb.ModelInferRequest(model_name="digits")
        request.inputs.add(
            name="images", datatype="BYTES", shape=[1]
        ).contents.bytes_contents.append(png)
        request.outputs.add(name="probabilities")
        with grpc.insecure_channel(server.grpc) as channel:
            reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        out = reply.outputs[0]
        grpc_probs = (
            np.frombuffer(reply.raw_output_contents[0], "<f4")
            if reply.raw_output_contents
            else np.array(out.contents.fp32_contents, np.float32)
        )
        assert list(out.shape) == [1, len(labels)]
        np.testing.assert_allclose(http_probs, grpc_probs, rtol=0, atol=1e-6)
        assert abs(http_probs.sum() - 1.0) < 1e-4
        assert body["predictions"][0]["top_k"][0]["label"] == labels[int(np.argmax(grpc_probs))]
        _certification_is_reported(server, digits_repo, png, labels)
    finally:
        assert server.stop() == 0


def _certification_is_reported(server, digits_repo: Path, png: bytes, labels: list[str]) -> None:
    """/classify, /models and gRPC ModelMetadata say per class what the calibration certified."""
    meta = load_metadata(digits_repo / "digits" / "1")
    stored = {c.label: c.certified for c in meta.thresholds.per_class}
    files = [("image", ("digit.png", png, "image/png"))]
    body = HTTP.post(f"{server.http}/classify", files=files).json()
    assert body["certified"] == stored
    retargeted = HTTP.post(f"{server.http}/classify", files=files, data={"target_precision": "0.5"})
    expected = {}
    for label in labels:
        curve = meta.thresholds.curves[label]
        counts = CurveCounts(
            np.asarray(curve.thresholds),
            np.asarray(curve.tp),
            np.asarray(curve.predicted),
            curve.positives,
        )
        expected[label] = choose(counts, "precision", 0.5, meta.thresholds.confidence).certified
    assert retargeted.json()["certified"] == expected
    explicit = HTTP.post(f"{server.http}/classify", files=files, data={"threshold": "0.5"}).json()
    assert "certified" not in explicit  # a given threshold has no target to certify
    entry = HTTP.get(f"{server.http}/models").json()["models"][0]
    for shown, c in zip(entry["thresholds"]["per_class"], meta.thresholds.per_class, strict=True):
        assert {k: shown[k] for k in ("threshold", "lower_bound", "support", "certified")} == {
            "threshold": c.threshold,
            "lower_bound": c.lower_bound,
            "support": c.support,
            "certified": c.certified,
        }
    assert (
        entry["thresholds"]["confidence"] == 0.95
        and "cross-fitted" in entry["thresholds"]["method"]
    )
    with grpc.insecure_channel(server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name="digits"), timeout=30
        )
    per_class = json.loads(reply.parameters["thresholds"].string_param)["per_class"]
    assert [(c["label"], c["certified"], c["support"]) for c in per_class] == [
        (c.label, c.certified, c.support) for c in meta.thresholds.per_class
    ]
