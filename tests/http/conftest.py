"""Real Visor servers (BentoML HTTP + gRPC in one process) on free loopback ports.

The model repository comes from the engine's fixture helpers (tests/service/conftest.py): a tiny
ONNX model built without TensorFlow, three labels "top", "bottom", "left" on 8x8 grayscale.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from tests.service.conftest import free_port, write_version

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


def start_server(workdir: Path, models: Path, **settings: object) -> Server:
    """``python -m service serve`` as a subprocess; returns once HTTP and gRPC answer ready."""
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
    server = Server(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


def _wait_ready(server: Server, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.http}/readyz", timeout=2).status_code == 200:
                with grpc.insecure_channel(server.grpc) as channel:
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


KEY = {"X-API-Key": "key-two"}
