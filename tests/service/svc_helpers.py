"""Helpers and fixtures of the service tests: a tiny deterministic model repository built with
onnx.helper (no TensorFlow), a background event loop, an in-process gRPC server.

The model: float32 [N, 8, 8, 1] in 0..255 → flatten → MatMul → (Softmax). Three labels:
"top" lights up for bright rows 0-3, "bottom" for rows 4-7, "left" for columns 0-3.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from prometheus_client import CollectorRegistry

from contract.metadata import ModelMetadata, sha256_path
from service.settings import Settings

LABELS = ["top", "bottom", "left"]
H = W = 8


def weights() -> np.ndarray:
    w = np.zeros((H, W, 3), np.float32)
    w[:4, :, 0] = 1.0
    w[4:, :, 1] = 1.0
    w[:, :4, 2] = 1.0
    return w.reshape(H * W, 3) * (0.5 / 255.0)


def reference_probabilities(pixels: np.ndarray) -> np.ndarray:
    logits = pixels.reshape(len(pixels), -1).astype(np.float64) @ weights().astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build_onnx(path: Path, logits: bool = False) -> None:
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits" if not logits else "probabilities"]),
    ]
    if not logits:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(np.array([-1, H * W], np.int64), "shape"),
            numpy_helper.from_array(weights(), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def metadata(name: str, version: int, sha: str, logits: bool = False) -> dict:
    grid = [round(0.1 * i, 2) for i in range(1, 10)]
    curve = {
        "thresholds": grid,
        "precision": [0.5 + 0.05 * i for i in range(9)],  # 0.5 … 0.9
        "recall": [1.0 - 0.1 * i for i in range(9)],  # 1.0 … 0.2
    }
    per_class = [
        {
            "label": lab,
            "threshold": 0.5,
            "val_precision": 0.7,
            "val_recall": 0.6,
            "target_met": True,
        }
        for lab in LABELS
    ]
    cm = {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10}
    meta = {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(),
        "labels": LABELS,
        "input": {
            "name": "image",
            "height": H,
            "width": W,
            "channels": 1,
            "color_mode": "grayscale",
            "resize_method": "bilinear",
        },
        "output": {"name": "probabilities", "kind": "logits" if logits else "probabilities"},
        "thresholds": {
            "policy": "precision",
            "target": 0.7,
            "per_class": per_class,
            "curves": {lab: curve for lab in LABELS},
        },
        "metrics": {
            "accuracy": 1.0,
            "macro_precision": 1.0,
            "macro_recall": 1.0,
            "macro_f1": 1.0,
            "per_class": {lab: cm for lab in LABELS},
            "confusion_matrix": [[10, 0, 0], [0, 10, 0], [0, 0, 10]],
            "samples": 30,
        },
        "artifacts": {"onnx": {"path": "model.onnx", "sha256": sha}},
        "onnx_opset": 17,
        "parity": {"onnx": 0.0},
        "frameworks": {"onnx": onnx.__version__},
        "training": {"fixture": True},
    }
    ModelMetadata.model_validate(meta)
    return meta


def write_version(
    root: Path, name: str, version: int, *, logits: bool = False, bad_sha: bool = False
) -> Path:
    """Publish ``root/name/version`` atomically (as training does)."""
    tmp = root / name / f".tmp-{version}"
    tmp.mkdir(parents=True)
    build_onnx(tmp / "model.onnx", logits)
    sha = "0" * 64 if bad_sha else sha256_path(tmp / "model.onnx")
    (tmp / "metadata.json").write_text(json.dumps(metadata(name, version, sha, logits)))
    final = root / name / str(version)
    tmp.rename(final)
    return final


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_version(root, "tiny", 1)
    write_version(root, "tiny_logits", 1, logits=True)
    return root


@pytest.fixture
def make_settings(model_repo: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        base = {
            "models": model_repo,
            "providers": ["CPUExecutionProvider"],
            "poll_interval_s": 0,
            "max_batch_size": 8,
            "max_queue_delay_ms": 2.0,
            "intra_op_threads": 1,
            "grpc_port": 0,
            "host": "127.0.0.1",
            "warmup_batch_sizes": [1, 8],
            "_env_file": None,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def image_pixels(kind: str) -> np.ndarray:
    """uint8 [8, 8, 1]: bright where ``kind`` says."""
    x = np.zeros((H, W, 1), np.uint8)
    if kind == "top":
        x[:4] = 255
    elif kind == "bottom":
        x[4:] = 255
    elif kind == "left":
        x[:, :4] = 255
    return x


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels[..., 0], "L")
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def hold_batches(version: object) -> tuple[threading.Event, threading.Event]:
    """Make a loaded version's batches wait inside the backend: returns (gate, entered).

    ``entered`` is set when a batch reached the backend; it runs once ``gate`` is set."""
    gate, entered = threading.Event(), threading.Event()
    real_run = version.backend.run

    def held_run(x: np.ndarray) -> np.ndarray:
        entered.set()
        gate.wait(30)
        return real_run(x)

    version.batcher._run = held_run
    return gate, entered


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Liveness only: poll until ``predicate()`` holds, fail after a generous timeout."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LoopThread:
    """An event loop in a background thread: servers run there, tests stay synchronous."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class GrpcFixture:
    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        from service.engine import Engine
        from service.grpc.frontend import GrpcFrontend

        self.settings = settings
        self.thread = LoopThread()
        self.engine = Engine(settings, registry=registry)
        self.thread.run(self.engine.start())
        self.server = GrpcFrontend(self.engine, settings)
        self.thread.run(self.server.start())
        self.port = self.server.port
        self.url = f"127.0.0.1:{self.port}"
        self.stopped = False

    def stop(self, grace: float = 5.0) -> None:
        if not self.stopped:
            self.stopped = True
            self.thread.run(self.server.stop(grace))
            self.thread.run(self.engine.stop())
            self.thread.close()


@pytest.fixture
def grpc_server(make_settings, registry):
    fx = GrpcFixture(make_settings(), registry)
    yield fx
    fx.stop(0)


@pytest.fixture
def stub(grpc_server):
    import grpc

    from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(grpc_server.url)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()
