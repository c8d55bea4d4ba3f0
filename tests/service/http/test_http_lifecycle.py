"""One process, both protocols: shared batches, several workers, SIGTERM under load."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.helpers.models import encode, image_pixels, slow_repo, tiny_repo
from tests.helpers.servers import HTTP, Server, start_server

PNG = encode(image_pixels("top"))


def _samples(server: Server, name: str) -> dict[tuple, float]:
    """Every sample of metric family ``name`` as {(sample name, labels...): value}."""
    text = HTTP.get(f"{server.http}/metrics").text
    out: dict[tuple, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def _batches(server: Server, model: str) -> tuple[float, float]:
    """(batches formed, images in them) for ``model``, summed over workers."""
    samples = {
        k: v for k, v in _samples(server, "visor_batch_size").items() if ("model", model) in k
    }
    count = sum(v for k, v in samples.items() if k[0] == "visor_batch_size_count")
    total = sum(v for k, v in samples.items() if k[0] == "visor_batch_size_sum")
    return count, total


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    work = tmp_path_factory.mktemp("batching")
    srv = start_server(work, slow_repo(work), max_batch_size=256, inference_threads=1)
    yield srv
    srv.stop()


def _request(model: str, pixels: np.ndarray | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    if pixels is None:
        request.inputs.add(
            name="images", datatype="BYTES", shape=[1]
        ).contents.bytes_contents.append(PNG)
    else:
        request.inputs.add(name="image", datatype="FP32", shape=list(pixels.shape))
        request.raw_input_contents.append(pixels.tobytes())
    return request


def test_http_and_grpc_requests_share_batches(batching_server: Server) -> None:
    """While a big batch occupies the one inference thread, one HTTP and one gRPC request queue;
    with one queue for both protocols they leave together: 2 batches, not 3."""
    blocker = np.full((256, 8, 8, 1), 255, np.float32)
    before = _batches(batching_server, "slow")

    async def main() -> None:
        async with (
            httpx.AsyncClient(base_url=batching_server.http, timeout=60) as http,
            grpc.aio.insecure_channel(batching_server.grpc) as channel,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            big = asyncio.ensure_future(stub.ModelInfer(_request("slow", blocker)))
            await asyncio.sleep(0.15)
            files = [("image", ("top.png", PNG, "image/png"))]
            r, reply = await asyncio.gather(
                http.post("/classify", files=files, data={"model": "slow"}),
                stub.ModelInfer(_request("slow")),
            )
            assert r.status_code == 200, r.text
            assert reply.model_name == "slow" and (await big).model_name == "slow"

    asyncio.run(main())
    count, images = (a - b for a, b in zip(_batches(batching_server, "slow"), before, strict=True))
    assert images == 256 + 2
    assert count == 2, "the HTTP and the gRPC request did not share a batch"
    requests = _samples(batching_server, "visor_requests")
    protocols = {
        dict(k[1:])["protocol"] for k, v in requests.items() if v and k[0].endswith("_total")
    }
    assert {"http", "grpc"} <= protocols


def _wait_for_grpc_listeners(server: Server, count: int, timeout: float = 60.0) -> None:
    port = int(server.grpc.rpartition(":")[2])
    end = time.monotonic() + timeout
    while True:
        pids = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        if len(pids) >= count or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert len(pids) == count, f"{len(pids)} processes listen on the gRPC port, expected {count}"


def test_sigterm_under_load_loses_no_request(tmp_path: Path) -> None:
    """Two workers under mixed load; SIGTERM while big requests of both protocols are running:
    every request sent before the signal succeeds and the server exits 0."""
    server = start_server(
        tmp_path,
        slow_repo(tmp_path),
        workers=2,
        max_batch_size=256,
        cpu_max_batch_size=256,
        max_queue_size=100_000,
        max_images_per_request=100_000,
        grace_period_s=60.0,
    )
    _wait_for_grpc_listeners(server, 2)  # both workers bound the gRPC port (SO_REUSEPORT)
    spans: list[tuple[str, float, float, str]] = []  # protocol, start, end, outcome
    stop = asyncio.Event()
    probe = np.full((64, 8, 8, 1), 255, np.float32)

    async def timed(protocol: str, call: Awaitable[object]) -> None:
        start = time.monotonic()
        try:
            result = await call
            ok = not isinstance(result, httpx.Response) or result.status_code == 200
            outcome = "ok" if ok else f"http {result.status_code}: {result.text}"
        except (httpx.HTTPError, grpc.aio.AioRpcError) as err:
            outcome = repr(err)
        spans.append((protocol, start, time.monotonic(), outcome))

    async def main() -> float:
        async with (
            httpx.AsyncClient(base_url=server.http, timeout=60) as http,
            grpc.aio.insecure_channel(server.grpc) as channel,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            files = [("image", ("t.png", PNG, "image/png"))]
            # NOTE: size the big requests by this machine's speed (about 2 s each), so they are
            # surely in flight at the signal on a fast machine as on a slow one.
            t0 = time.monotonic()
            await stub.ModelInfer(_request("slow", probe), timeout=60)
            per_image = max((time.monotonic() - t0) / len(probe), 1e-5)
            big = np.full((int(min(8192, max(128, 2.0 / per_image))), 8, 8, 1), 255, np.float32)

            async def loop(protocol: str) -> None:
                while not stop.is_set():
                    if protocol == "http":
                        call = http.post("/classify", files=files, data={"model": "slow"})
                    else:
                        call = stub.ModelInfer(_request("slow"), timeout=60)
                    await timed(protocol, call)

            loops = [asyncio.create_task(loop(p)) for p in ("http", "grpc") * 4]
            await asyncio.sleep(1.0)
            stop.set()
            # NOTE: big requests (about a second each) sent just before the signal are certainly
            # in flight when it lands, on both protocols.
            tensor = {
                "name": "image",
                "datatype": "FP32",
                "shape": list(big.shape),
                "parameters": {"binary_data_size": big.nbytes},
            }
            header = json.dumps({"inputs": [tensor]}).encode()
            rest = http.post(
                "/v2/models/slow/infer",
                content=header + big.tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            heavy = [
                asyncio.create_task(timed("http", rest)),
                asyncio.create_task(timed("grpc", stub.ModelInfer(_request("slow", big)))),
            ]
            await asyncio.sleep(0.3)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*loops, *heavy)
            return signalled

    signalled = asyncio.run(main())
    code = server.stop(timeout=120)
    failed = [s for s in spans if s[3] != "ok"]
    assert not failed, (failed[:5], server.output())
    assert len(spans) > 10
    in_flight = {p for p, start, end, _ in spans if start < signalled < end}
    assert in_flight == {"http", "grpc"}, (
        "no request was in flight at SIGTERM: the test proved nothing"
    )
    assert code == 0, server.output()


def test_sigterm_with_no_load_exits_promptly(tmp_path: Path) -> None:
    server = start_server(tmp_path, tiny_repo(tmp_path), protocol="http")
    assert HTTP.get(f"{server.http}/readyz").status_code == 200
    with grpc.insecure_channel(server.grpc) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=1)  # protocol=http: no gRPC port
    assert server.stop(timeout=30) == 0


def test_readyz_stays_503_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    server = start_server(tmp_path, tmp_path / "empty", probe="/livez", protocol="http")
    try:
        assert HTTP.get(f"{server.http}/readyz").status_code == 503
        ready = HTTP.get(f"{server.http}/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})  # the body says it too
        live = HTTP.get(f"{server.http}/v2/health/live")
        assert (live.status_code, live.json()) == (200, {"live": True})
        r = HTTP.post(f"{server.http}/classify", files=[("image", ("t.png", PNG, "image/png"))])
        assert (r.status_code, r.json()["code"]) == (503, "unavailable")
    finally:
        assert server.stop(timeout=30) == 0
