"""One worker without BentoML's supervisor (``VISOR_SINGLE_PROCESS``, on by default).

A real ``python -m service serve`` each time: the started process itself must serve HTTP and
gRPC with no child process, exit 0 after SIGTERM or Ctrl-C (uvicorn re-raises the signal after
its drain, which would kill it by the signal), and remove its Prometheus folder. With the
switch off, BentoML's supervisor is back and watches one child.
"""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.models import H, W, tiny_repo
from tests.helpers.servers import start_server


def _infer_both(server) -> None:
    pixels = np.random.default_rng(0).random((1, H, W, 1), dtype=np.float32)
    body = {
        "inputs": [
            {"name": "image", "shape": list(pixels.shape), "datatype": "FP32",
             "data": pixels.ravel().tolist()}
        ]
    }  # fmt: skip
    answer = httpx.post(f"{server.http}/v2/models/tiny/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    assert tensor.name == "image"
    with grpc.insecure_channel(server.grpc) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert reply.model_name == "tiny"


def _metrics_folders(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("visor-prometheus-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_worker_is_the_started_process_and_exits_cleanly(
    workdir: Path, sig: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = workdir / f"tmp-{sig}"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # where the launcher makes the Prometheus folder
    server = start_server(workdir, tiny_repo(workdir / f"single-{sig}"), workers=1)
    try:
        process = psutil.Process(server.proc.pid)
        assert process.children(recursive=True) == [], server.output()
        assert "service.http.single" in " ".join(process.cmdline())
        _infer_both(server)
        metrics = httpx.get(f"{server.http}/metrics", timeout=10).text
        assert 'visor_requests_total{' in metrics and 'protocol="grpc"' in metrics
        assert len(_metrics_folders(tmp)) == 1
    finally:
        code = server.stop(sig)
    assert code == 0, server.output()
    assert _metrics_folders(tmp) == [], "the Prometheus folder outlived the server"
    assert "Traceback" not in server.output()


def test_switched_off_the_supervisor_watches_the_one_worker(workdir: Path) -> None:
    server = start_server(
        workdir, tiny_repo(workdir / "supervised"), workers=1, single_process=False
    )
    try:
        children = psutil.Process(server.proc.pid).children()
        assert len(children) == 1, server.output()
        assert "_bentoml_impl.worker.service" in " ".join(children[0].cmdline())
        _infer_both(server)
    finally:
        code = server.stop()
    assert code == 0, server.output()
