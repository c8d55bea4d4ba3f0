"""Several workers: how many ``--workers auto`` gives, and a real two-worker server whose
workers each answer their connections and take each other's feedback (signed request ids)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import visor_ext_pb2 as ext
from service.settings import Settings
from service.workers.count import auto_workers, resolve_workers
from tests.helpers import ROOT
from tests.helpers.models import H, W, reference_probabilities, write_version
from tests.helpers.servers import free_port

CPU = ["CPUExecutionProvider"]


@pytest.fixture
def four_cores(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})


def test_auto_gives_a_worker_per_core_but_one_for_small_models_only(tmp_path, four_cores) -> None:
    repo = tmp_path / "models"
    assert auto_workers(repo, CPU, 1.0) == 1  # no repository yet
    write_version(repo, "tiny", 1)
    assert auto_workers(repo, CPU, 1.0) == 3
    big = repo / "big" / "1"
    big.mkdir(parents=True)
    (big / "model.onnx").write_bytes(b"\0" * 1_500_000)
    assert auto_workers(repo, CPU, 1.0) == 1  # the largest model decides
    assert auto_workers(repo, CPU, 2.0) == 3


@pytest.mark.parametrize("cores", [1, 2])
def test_auto_is_one_worker_on_one_or_two_cores(tmp_path, monkeypatch, cores) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    write_version(tmp_path, "tiny", 1)
    assert auto_workers(tmp_path, CPU, 1.0) == 1


def test_auto_stops_at_four_workers(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    write_version(tmp_path, "tiny", 1)
    assert auto_workers(tmp_path, CPU, 1.0) == 4


def test_settings_only_parse_and_start_up_resolves_auto(tmp_path, four_cores) -> None:
    write_version(tmp_path, "tiny", 1)
    settings = Settings(models=tmp_path, _env_file=None)
    assert settings.workers == "auto" and settings.worker_count == 1  # no folder scan yet
    assert resolve_workers(settings).workers == 3
    assert Settings(models=tmp_path, workers="3", _env_file=None).workers == 3
    for bad in (0, "many", -2):
        with pytest.raises(ValueError, match="workers"):
            Settings(models=tmp_path, workers=bad, _env_file=None)


# --- two sibling endpoints in one loop -----------------------------------------------------


# --- a real server with two workers --------------------------------------------------------


def _serve(repo: Path, port: int, workers: int, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "service", "serve", "--models", str(repo), "--grpc-only"]
    argv += ["--grpc-port", str(port), "--host", "127.0.0.1", "--workers", str(workers), *extra]
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "VISOR_POLL_INTERVAL_S": "0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _pixels(i: int) -> np.ndarray:
    pixels = np.zeros((1, H, W, 1), np.uint8)
    pixels[0, : H // 2, :] = 150 if i % 2 else 0  # odd: the top rows lit
    pixels[0, :, : W // 2] += np.uint8(i % 101)  # and every call a little different
    return pixels


def _request(i: int) -> bytes:
    req = pb.ModelInferRequest(model_name="tiny", id=str(i))
    req.inputs.add(name="image", datatype="UINT8", shape=[1, H, W, 1])
    req.raw_input_contents.append(_pixels(i).tobytes())
    return req.SerializeToString()


async def _drive(port: int, calls: int, concurrency: int) -> list[pb.ModelInferResponse]:
    """``calls`` ModelInfer over ``concurrency`` connections (the kernel spreads connections
    over the workers), then each answer's feedback over another connection than its own."""
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(concurrency)
    ]
    try:
        infers = [
            c.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=None,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            for c in channels
        ]
        ready = channels[0].unary_unary(
            "/inference.GRPCInferenceService/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                if (await ready(pb.ModelReadyRequest(name="tiny"), timeout=2)).ready:
                    break
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            await asyncio.sleep(0.2)
        answers: list = [None] * calls
        todo = iter(range(calls))

        async def client(infer) -> None:
            for i in todo:
                answers[i] = await infer(_request(i), timeout=30)

        await asyncio.gather(*(client(infer) for infer in infers))
        # a malformed call is refused the same way whichever worker answers it
        for infer in infers:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await infer(b"\xff\xff\xff", timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for i, answer in enumerate(answers[:200]):
            feedback = channels[(i + 1) % concurrency].unary_unary(
                "/visor.v1.Feedback/SendFeedback",
                request_serializer=ext.FeedbackRequest.SerializeToString,
                response_deserializer=ext.FeedbackResponse.FromString,
            )
            done = await feedback(
                ext.FeedbackRequest(request_id=_request_id(answer), labels=["top"]), timeout=10
            )
            assert done.accepted == 1
        return answers
    finally:
        for c in channels:
            await c.close()


def _request_id(answer: pb.ModelInferResponse) -> str:
    return answer.parameters["request_id"].string_param


def _worker_cpu(proc: subprocess.Popen) -> dict[int, float]:
    kids = psutil.Process(proc.pid).children()
    return {k.pid: sum(k.cpu_times()[:2]) for k in kids if "spawn_main" in " ".join(k.cmdline())}


def test_two_workers_answer_their_connections_and_each_others_feedback(tmp_path) -> None:
    repo = tmp_path / "models"
    write_version(repo, "tiny", 1)
    port = free_port()
    proc = _serve(repo, port, 2)
    try:
        asyncio.run(_drive(port, 30, 4))  # both workers up and warm
        before = _worker_cpu(proc)
        answers = asyncio.run(_drive(port, 1000, 16))  # 16 connections: both workers get some
        after = _worker_cpu(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert len(before) == 2, output
    # every answer is right, whichever worker gave it
    for i, answer in enumerate(answers):
        assert answer.id == str(i)
        probs = np.frombuffer(answer.raw_output_contents[0], np.float32)
        np.testing.assert_allclose(probs, reference_probabilities(_pixels(i))[0], atol=1e-5)
    ids = {_request_id(a) for a in answers}
    assert len(ids) == len(answers)
    used = sorted(after[pid] - before[pid] for pid in before)
    assert used[0] > 0.1 * used[1], (used, output)
