"""One request walks one way: adapter → protocol → engine → batcher → backend, and back out.

A profiler records every function of ``service/`` and ``contract/`` that a real request enters
(one gRPC ``ModelInfer`` over a real channel, one ``/classify`` through the HTTP front-end's
handler), with the file that called it. A file may be entered again only by the caller that
entered it first (a helper called twice by the same module), or it is the engine, which the
path returns to by design. The layers must all be on the path, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.models import encode, write_version
from tests.helpers.servers import GrpcFixture, LoopThread

ROOT = Path(__file__).resolve().parents[2]
# The engine orchestrates: the path returns to it between its steps. Data types are read
# (properties, accessors) by whichever layer holds the value: they hold no control flow.
EXEMPT = {
    "service/engine.py",
    "service/types.py",
    "service/errors.py",
    "service/protocol/request.py",
    "contract/metadata.py",
}
LAYERS = [
    ("adapter", ("service/grpc/", "service/http/")),
    ("protocol", ("service/protocol/",)),
    ("engine", ("service/engine.py",)),
    ("batcher", ("service/batching.py",)),
    ("backend", ("service/backends/",)),
]


class PathRecorder:
    """A profile function: each new frame in a project file, with the project file calling it."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str | None, bool]] = []  # file, function, caller, on stack
        self._frames: list[FrameType] = []  # kept alive, so ids are not reused
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self.active = False

    def record(self, call: Any) -> Any:
        """Record what ``call()`` enters."""
        self.active = True
        try:
            return call()
        finally:
            self.active = False

    def _file(self, frame: FrameType) -> str | None:
        path = frame.f_code.co_filename
        if not path.startswith(str(ROOT)) or "generated" in path:
            return None
        rel = path[len(str(ROOT)) + 1 :]
        return rel if rel.startswith(("service/", "contract/")) else None

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> None:
        if not self.active or event != "call" or (name := self._file(frame)) is None:
            return
        with self._lock:
            if id(frame) in self._seen:  # a coroutine resumed, not a new call
                return
            self._seen.add(id(frame))
            self._frames.append(frame)
            stack = [n for f in _callers(frame) if (n := self._file(f))]
            caller = stack[0] if stack else None
            if caller != name:
                self.entries.append((name, frame.f_code.co_name, caller, name in stack))

    def returns(self) -> list[str]:
        """Entries into a file that another caller entered first (the rule's violations)."""
        first: dict[str, str | None] = {}
        bad = []
        for name, function, caller, on_stack in self.entries:
            if caller is None or on_stack:  # started by the loop or a pool thread: no caller
                continue
            first.setdefault(name, caller)
            if first[name] != caller and name not in EXEMPT:
                bad.append(f"{caller} → {name}:{function} (first entered from {first[name]})")
        return bad

    def layers(self) -> list[str]:
        order = []
        for name, *_ in self.entries:
            for layer, prefixes in LAYERS:
                if name.startswith(prefixes) and layer not in order:
                    order.append(layer)
        return order


def _callers(frame: FrameType):
    f = frame.f_back
    while f is not None:
        yield f
        f = f.f_back


@pytest.fixture
def recorder() -> Any:
    """A recorder installed in every thread started from now on: the server's loop and pools."""
    recorder = PathRecorder()
    threading.setprofile(recorder)
    yield recorder
    threading.setprofile(None)  # type: ignore[arg-type]


@pytest.fixture
def served(recorder, make_settings, registry):
    fx = GrpcFixture(make_settings(monitoring=True), registry)
    yield fx
    fx.stop(0)


def _infer_request(raw: bool) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="tiny")
    if raw:
        req.inputs.add(name="image", datatype="UINT8", shape=[1, 8, 8, 1])
        req.raw_input_contents.append(np.zeros((1, 8, 8, 1), np.uint8).tobytes())
    else:
        png = encode(np.full((8, 8), 200, np.uint8))
        req.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            png
        )
    req.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    return req


@pytest.mark.parametrize("raw", [True, False], ids=["raw-uint8", "encoded-png"])
def test_grpc_model_infer_walks_one_way(served, recorder, raw: bool) -> None:
    channel = grpc.insecure_channel(served.url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = _infer_request(raw)
    stub.ModelInfer(request, timeout=30)  # warm: pool threads started, caches filled
    recorder.record(lambda: stub.ModelInfer(request, timeout=30))
    channel.close()
    print("\n".join(f"{c} -> {n}:{f}" for n, f, c, _ in recorder.entries))
    assert recorder.returns() == []
    assert recorder.layers() == ["adapter", "engine", "protocol", "batcher", "backend"]
    files = [name for name, *_ in recorder.entries]
    assert files[0].startswith("service/grpc/") and "service/protocol/parse.py" in files
    if not raw:
        assert "service/decoding.py" in files and "contract/imaging.py" in files


def test_the_recorder_sees_a_return_to_a_file_already_left() -> None:
    recorder = PathRecorder()
    recorder.entries = [
        ("service/engine.py", "infer", "service/grpc/servicer.py", False),
        ("service/protocol/raw.py", "tensor_from_bytes", "service/protocol/parse.py", False),
        ("service/protocol/raw.py", "bytes_to_raw", "service/grpc/convert.py", False),
    ]
    expected = (
        "service/grpc/convert.py → service/protocol/raw.py:bytes_to_raw "
        "(first entered from service/protocol/parse.py)"
    )
    assert recorder.returns() == [expected]


def classify_entries(models: Path) -> list[tuple[str, str, str | None, bool]]:
    """A /classify through the HTTP front-end's handler, recorded. Run in a process of its own:
    importing the BentoML service reconfigures logging for the whole process."""
    from prometheus_client import CollectorRegistry
    from starlette.requests import Request

    from service.http.frontend import Visor
    from service.server import VisorServer
    from service.settings import Settings

    recorder = PathRecorder()
    threading.setprofile(recorder)
    settings = Settings(
        models=models,
        providers=["CPUExecutionProvider"],
        poll_interval_s=0,
        protocol="http",
        warmup_batch_sizes=[1],
        _env_file=None,
    )
    service = Visor.inner.__new__(Visor.inner)
    service.settings = settings
    service.server = VisorServer(settings, CollectorRegistry())
    service.engine = service.server.engine
    handler = Visor.inner.__dict__["classify"].func
    thread = LoopThread()
    thread.run(service.start())
    png = encode(np.asarray(Image.new("L", (8, 8), 90)))
    boundary = "visor-test-boundary"
    parts = [
        b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png,
        b'Content-Disposition: form-data; name="model"\r\n\r\ntiny',
        b'Content-Disposition: form-data; name="top_k"\r\n\r\n2',
    ]
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    body += f"--{boundary}--\r\n".encode()

    def classify() -> Any:
        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/classify",
            "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
            "query_string": b"",
        }
        answer = thread.run(handler(service, Request(scope, receive)))
        assert answer.status_code == 200, answer.body
        return answer

    try:
        classify()  # warm
        recorder.record(classify)
    finally:
        thread.run(service.stop())
        thread.close()
        threading.setprofile(None)  # type: ignore[arg-type]
    return recorder.entries


def test_classify_walks_one_way(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_version(models, "tiny", 1)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tests.service.test_request_path import classify_entries\n"
        "print(json.dumps(classify_entries(Path(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(models)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recorder = PathRecorder()
    recorder.entries = [tuple(e) for e in json.loads(done.stdout.splitlines()[-1])]
    print("\n".join(f"{c} -> {n}:{f}" for n, f, c, _ in recorder.entries))
    assert recorder.returns() == []
    assert recorder.layers() == ["adapter", "engine", "protocol", "batcher", "backend"]
    files = [name for name, *_ in recorder.entries]
    assert files[0] == "service/http/frontend.py"
