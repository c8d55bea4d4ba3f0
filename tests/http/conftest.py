"""Real Visor servers (BentoML HTTP + gRPC in one process) on free loopback ports.

The model repository comes from the engine's fixture helpers (tests/service/svc_helpers.py): a tiny
ONNX model built without TensorFlow, three labels "top", "bottom", "left" on 8x8 grayscale.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import pytest

from contract.metadata import sha256_path
from tests.service.svc_helpers import free_port, write_version

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen
    http: str  # base URL
    grpc: str  # host:port
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session, started below
                self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def tiny_repo(root: Path) -> Path:
    models = root / "models"
    write_version(models, "tiny", 1)
    return models


@dataclass
class ClientTLS:
    """How a test client reaches a server with TLS on: an ssl context (httpx) and gRPC's."""

    context: ssl.SSLContext
    grpc: grpc.ChannelCredentials


def start_server(
    workdir: Path,
    models: Path,
    *,
    probe: str = "/readyz",
    tls: ClientTLS | None = None,
    **settings: object,
) -> Server:
    """``python -m service serve`` as a subprocess; returns once HTTP and gRPC answer ready.

    With TLS settings among ``settings``, ``tls`` is how the readiness probes connect.
    """
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "VISOR_MODELS": str(models),
        "VISOR_HOST": "127.0.0.1",
        "VISOR_HTTP_PORT": str(http_port),
        "VISOR_GRPC_PORT": str(grpc_port),
        "VISOR_PROVIDERS": '["CPUExecutionProvider"]',
        "VISOR_POLL_INTERVAL_S": "0",
        "VISOR_WARMUP_BATCH_SIZES": "[1]",
        "VISOR_INTRA_OP_THREADS": "1",
        "VISOR_INFERENCE_THREADS": "1",
        # NOTE: each server its own BentoML home: its prometheus multiprocess folder is wiped
        # at start, which would erase a neighbouring server's metrics.
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in settings.items():
        env[f"VISOR_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    log = workdir / f"server-{http_port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    scheme = "http" if tls is None else "https"
    server = Server(proc, f"{scheme}://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
    try:
        _wait_ready(server, probe, grpc_too=settings.get("protocol", "both") == "both", tls=tls)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def _wait_ready(
    server: Server, probe: str, grpc_too: bool, tls: ClientTLS | None, timeout: float = 120.0
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            verify = True if tls is None else tls.context
            if httpx.get(f"{server.http}{probe}", timeout=2, verify=verify).status_code == 200:
                if grpc_too:
                    channel = (
                        grpc.insecure_channel(server.grpc)
                        if tls is None
                        else grpc.secure_channel(server.grpc, tls.grpc)
                    )
                    with channel:
                        grpc.channel_ready_future(channel).result(timeout=5)
                return
        except (httpx.HTTPError, grpc.FutureTimeoutError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"server not ready in {timeout}s:\n{server.output()}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    """Both protocols, API keys on, a small body limit: the server most tests share."""
    srv = start_server(
        workdir,
        tiny_repo(workdir),
        api_keys="key-one,key-two",
        max_body_bytes=64 * 1024,
        max_images_per_request=4,
    )
    yield srv
    srv.stop()


# NOTE: copy it per call (dict(KEY)): tritonclient writes its own headers into the dict it gets.
KEY = {"X-API-Key": "key-two"}


def slow_repo(root: Path, repeat: int = 32, width: int = 2048) -> Path:
    """Model "slow": the tiny model's answers, but ``repeat`` [width x width] MatMuls per image,
    so a batch of a few dozen images keeps the (single) inference thread busy for a while."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.service.svc_helpers import H, W, metadata, weights

    lift = np.zeros((H * W, width), np.float32)
    lift[:, : H * W] = np.eye(H * W, dtype=np.float32)
    head = np.zeros((width, 3), np.float32)
    head[: H * W] = weights()
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["x0"]),
        helper.make_node("MatMul", ["x0", "lift"], ["h0"]),
    ]
    for i in range(repeat):  # NOTE: identity weights, so ORT cannot fold them away
        nodes.append(helper.make_node("MatMul", [f"h{i}", "eye"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("MatMul", [f"h{repeat}", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(np.array([-1, H * W], np.int64), "shape"),
            numpy_helper.from_array(lift, "lift"),
            numpy_helper.from_array(np.eye(width, dtype=np.float32), "eye"),
            numpy_helper.from_array(head, "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = root / "models" / "slow" / "1"
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    meta = metadata("slow", 1, sha256_path(folder / "model.onnx"))
    (folder / "metadata.json").write_text(json.dumps(meta))
    return root / "models"


# NOTE: a generous timeout: the CI machine is shared, and a slow answer is not a wrong one.
HTTP = httpx.Client(timeout=60)
