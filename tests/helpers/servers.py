"""Servers for the tests, all on free loopback ports: ``python -m service serve`` as a subprocess
(HTTP and gRPC in one process), an in-process gRPC front-end on a background event loop, and the
helpers that wait for them or hold their batches."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from service.settings import Settings
from tests.helpers import ROOT

# NOTE: copy it per call (dict(KEY)): tritonclient writes its own headers into the dict it gets.
KEY = {"X-API-Key": "key-two"}

# NOTE: a generous timeout: the CI machine is shared, and a slow answer is not a wrong one.
HTTP = httpx.Client(timeout=60)


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


# --- in process: the engine and the gRPC front-end on a background loop ---------------------


class LoopThread:
    """An event loop in a background thread: servers run there, tests stay synchronous."""

    def __init__(self) -> None:
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


def hold_batches(version: object) -> tuple[threading.Event, threading.Event]:
    """Make a loaded ONNX version's batches wait inside the backend: returns (gate, entered).

    ``entered`` is set when a batch reached an ONNX Runtime session; it runs once ``gate`` is set.
    """
    gate, entered = threading.Event(), threading.Event()

    class Held:  # the real session, run once the gate opens
        def __init__(self, session) -> None:
            self.session = session

        def run(self, outputs, feed) -> list[np.ndarray]:
            entered.set()
            gate.wait(30)
            return self.session.run(outputs, feed)

    backend = version.backend
    backend.session = Held(backend.session)
    if backend.lone is not None:
        backend.lone = Held(backend.lone)
    return gate, entered


# --- a subprocess: python -m service serve --------------------------------------------------


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
