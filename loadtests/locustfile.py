"""Locust load test for Visor: an HTTP user and a gRPC user, tasks weighted by ``--mix``.

    locust -f loadtests/locustfile.py --headless -u 16 -r 8 -t 30s \
        --host http://127.0.0.1:3000 --grpc-target 127.0.0.1:50051 \
        --payloads loadtests/results/payloads --model digits \
        --mix classify=3,v2_infer=1,grpc_raw=3,grpc_bytes=1

(``make loadtest`` starts a server, makes the payloads and runs exactly this.)

Tasks: ``classify`` (HTTP multipart POST /classify, one encoded image), ``v2_infer`` (HTTP
POST /v2/models/M/infer, UINT8 tensor in the binary-tensor extension), ``grpc_raw`` (ModelInfer,
UINT8 raw tensor) and ``grpc_bytes`` (ModelInfer, BYTES tensor of the encoded image). A user class
gets the sum of its tasks' weights, so ``--mix`` sets the request mix; a 0 drops a task (and a
user class whose tasks are all 0). Payloads come from ``python -m loadtests.payloads``.
"""

from __future__ import annotations

# NOTE: grpcio must cooperate with gevent (locust's concurrency) before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import sys
import time
from pathlib import Path

# NOTE: locust puts this file's folder on sys.path, not the repository root that holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from locust import User, constant, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtests.client import (
    BOUNDARY,
    MODEL_INFER,
    LoadSpec,
    grpc_messages,
    multipart_bodies,
    rest_v2_bodies,
)
from loadtests.loadtest import DEFAULT_MIX, parse_mix
from loadtests.payloads import Payloads

_wire: dict = {}  # request bodies, built once per locust process in the init hook


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument(
        "--payloads",
        type=str,
        default="loadtests/results/payloads",
        help="folder written by python -m loadtests.payloads",
    )
    parser.add_argument("--model", type=str, default="digits", help="model name to call")
    parser.add_argument(
        "--grpc-target",
        type=str,
        default="127.0.0.1:50051",
        help="host:port of Visor's gRPC server (loopback)",
    )
    parser.add_argument(
        "--mix",
        type=str,
        default=DEFAULT_MIX,
        help="task weights: classify=N,v2_infer=N,grpc_raw=N,grpc_bytes=N",
    )


@events.init.add_listener
def _setup(environment, **_kwargs) -> None:
    opts = environment.parsed_options
    if opts is None:  # NOTE: imported by a test or a tool, not run by locust
        return
    payloads = Payloads.load(Path(opts.payloads))
    spec = LoadSpec("grpc", "127.0.0.1", 0, opts.model, Path(opts.payloads), 1, 0.0)
    _wire.update(
        model=opts.model,
        multipart=multipart_bodies(spec, payloads),
        v2=rest_v2_bodies(spec, payloads),
        grpc_raw=grpc_messages(spec, payloads, encoded=False),
        grpc_bytes=grpc_messages(spec, payloads, encoded=True),
        grpc_target=opts.grpc_target,
    )
    mix = parse_mix(opts.mix)
    for user_class in (VisorHttpUser, VisorGrpcUser):
        names = [n for n, owner in TASKS.items() if owner is user_class]
        user_class.tasks = [getattr(user_class, n) for n in names for _ in range(mix[n])]
        user_class.weight = sum(mix[n] for n in names)


class VisorHttpUser(FastHttpUser):
    """HTTP: BentoML's /classify (multipart) and the OIP REST /v2 infer route."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self._i = 0

    def _next(self, bodies: list):
        self._i += 1
        return bodies[self._i % len(bodies)]

    @task
    def classify(self) -> None:
        self.client.post(
            "/classify",
            data=self._next(_wire["multipart"]),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            name="POST /classify (multipart)",
        )

    @task
    def v2_infer(self) -> None:
        body, size = self._next(_wire["v2"])
        self.client.post(
            f"/v2/models/{_wire['model']}/infer",
            data=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(size),
            },
            name="POST /v2/models/{m}/infer (binary tensor)",
        )


class VisorGrpcUser(User):
    """gRPC: Open Inference Protocol ModelInfer with a raw tensor or encoded images."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self._i = 0
        self._channel = grpc.insecure_channel(
            _wire["grpc_target"],
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self._infer = self._channel.unary_unary(MODEL_INFER)

    def on_stop(self) -> None:
        self._channel.close()

    def _call(self, kind: str, name: str) -> None:
        messages = _wire[kind]
        self._i += 1
        start, exc, size = time.perf_counter(), None, 0
        try:
            size = len(self._infer(messages[self._i % len(messages)], timeout=30))
        except grpc.RpcError as err:
            exc = err
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1e3,
            response_length=size,
            exception=exc,
            context={},
        )

    @task
    def grpc_raw(self) -> None:
        self._call("grpc_raw", "ModelInfer (UINT8 raw tensor)")

    @task
    def grpc_bytes(self) -> None:
        self._call("grpc_bytes", "ModelInfer (BYTES encoded image)")


TASKS = {
    "classify": VisorHttpUser,
    "v2_infer": VisorHttpUser,
    "grpc_raw": VisorGrpcUser,
    "grpc_bytes": VisorGrpcUser,
}
