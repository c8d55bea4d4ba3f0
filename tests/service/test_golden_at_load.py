"""Golden check at load: a version whose weights were damaged (checksum rewritten to match) is
refused, the previous version keeps serving, and gRPC says why (ModelReady/ModelMetadata)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from prometheus_client import CollectorRegistry

from contract.golden import read_golden
from contract.metadata import load_metadata, sha256_path
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.settings import Settings
from service.types import ModelStatus
from tests.helpers.servers import GrpcFixture


def garble_weights(version_dir: Path, version: int) -> None:
    """Flip the sign of half of the largest initializer, then make metadata.json match again."""
    path = version_dir / "model.onnx"
    model = onnx.load(str(path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(biggest).copy()
    flat = values.reshape(-1)
    flat[::2] *= -1.0
    biggest.CopyFrom(numpy_helper.from_array(values, biggest.name))
    onnx.save(model, str(path))
    meta = json.loads((version_dir / "metadata.json").read_text())
    meta["version"] = version
    meta["artifacts"]["onnx"]["sha256"] = sha256_path(path)
    (version_dir / "metadata.json").write_text(json.dumps(meta))


def _wait(predicate, timeout: float = 60.0) -> None:
    """Liveness only: poll until ``predicate()`` holds."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.05)


def test_damaged_version_is_refused_and_old_one_keeps_serving(
    digits_repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(digits_repo / "digits" / "1", root / "digits" / "1")
    settings = Settings(
        models=root,
        providers=["CPUExecutionProvider"],
        poll_interval_s=0.1,
        grpc_port=0,
        host="127.0.0.1",
        max_batch_size=8,
        _env_file=None,
    )
    fx = GrpcFixture(settings, CollectorRegistry())
    channel = grpc.insecure_channel(fx.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        # publish v2 as training does: built aside, renamed in
        staged = root / "digits" / ".tmp-2"
        shutil.copytree(digits_repo / "digits" / "1", staged)
        garble_weights(staged, 2)
        staged.rename(root / "digits" / "2")
        _wait(
            lambda: any(
                m.version == 2 and m.status is ModelStatus.FAILED for m in fx.engine.models()
            )
        )
        reason = fx.engine.model_info("digits", 2).reason
        assert "golden check failed" in reason
        assert fx.engine.model_ready("digits", 1) and fx.engine.model_info("digits").version == 1

        ready, call = stub.ModelReady.with_call(pb.ModelReadyRequest(name="digits", version="2"))
        assert ready.ready is False
        assert "golden check failed" in dict(call.trailing_metadata())["visor-load-error"]
        assert stub.ModelReady(pb.ModelReadyRequest(name="digits")).ready is True
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="digits", version="2"))
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert err.value.details().startswith("model digits v2 failed to load: golden check")
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="digits")).name == "digits"

        pixels = read_golden(root / "digits" / "1", load_metadata(root / "digits" / "1").golden)[0]
        request = pb.ModelInferRequest(model_name="digits")
        tensor = request.inputs.add(name="image", datatype="FP32", shape=list(pixels[:1].shape))
        tensor.contents.fp32_contents.extend(pixels[:1].reshape(-1).tolist())
        answer = stub.ModelInfer(request)
        assert answer.model_version == "1"
    finally:
        channel.close()
        fx.stop(0)
