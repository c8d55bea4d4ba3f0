"""End to end with the real trained digits model: one process, both protocols, same answer."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.http.conftest import HTTP, start_server


def test_http_classify_and_grpc_agree_on_a_digit_png(digits_repo: Path, tmp_path: Path) -> None:
    png_path = next((digits_repo.parent / "data").rglob("*.png"))
    png = png_path.read_bytes()
    server = start_server(tmp_path, digits_repo)
    try:
        r = HTTP.post(
            f"{server.http}/classify", files=[("image", (png_path.name, png, "image/png"))]
        )
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
    finally:
        assert server.stop() == 0
