"""A lean closed-loop load generator (asyncio), run in its own process(es) beside the server.

    python -m loadtests.client --target grpc --port 50051 --model digits \
        --payloads loadtests/results/payloads --concurrency 32 --duration 10

``concurrency`` coroutines each send one request, wait for the answer, and send the next. Requests
are serialised once up front (gRPC messages, multipart and JSON bodies) so the client spends its CPU
on the wire, not on building requests: on 2 shared cores every cycle the client burns is taken from
the server. Counts only what completes inside the measurement window (after ``--warmup``), and
stops by itself after ``--duration`` seconds or ``--max-requests`` requests, whichever comes first.
Prints one JSON object: requests/s, images/s, latency percentiles, errors and the client's CPU time.

Targets: ``grpc`` (ModelInfer, UINT8 raw tensor), ``grpc-bytes`` (ModelInfer, BYTES tensor of
encoded images), ``grpc-stream`` (the same requests as ``grpc`` over one ModelStreamInfer stream
per connection, each carrying an id its answer is matched by), ``http`` (multipart POST
/classify), ``rest-v2`` (POST /v2/models/M/infer, UINT8 tensor in the binary-tensor extension).
The gRPC and REST v2 requests are plain Open Inference Protocol, so the peers answer them too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from loadtests.payloads import Payloads

TARGETS = ("grpc", "grpc-bytes", "grpc-stream", "http", "rest-v2")
BOUNDARY = "visorloadtestboundary7c1f"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
Send = Callable[[int], Awaitable[None]]


@dataclass
class LoadSpec:
    target: str
    host: str
    port: int
    model: str
    payloads: Path
    concurrency: int
    duration: float
    warmup: float = 1.0
    max_requests: int = 1_000_000
    batch: int = 1
    timeout: float = 30.0
    channels: int = 1


@dataclass
class LoadResult:
    target: str
    concurrency: int
    batch: int
    requests: int = 0
    errors: int = 0
    error_sample: str = ""
    window_s: float = 0.0
    client_cpu_s: float = 0.0
    window_epoch: tuple[float, float] = (0.0, 0.0)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        rps = self.requests / self.window_s if self.window_s else 0.0
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            rps=rps,
            images_per_s=rps * self.batch,
            p50_ms=float(np.percentile(lat, 50)),
            p95_ms=float(np.percentile(lat, 95)),
            p99_ms=float(np.percentile(lat, 99)),
            mean_ms=float(lat.mean()),
            client_cpu_cores=self.client_cpu_s / self.window_s if self.window_s else 0.0,
        )
        return out


# --- request builders: everything serialised once ------------------------------------------


def _batches(spec: LoadSpec, payloads: Payloads) -> list[list[int]]:
    n = len(payloads.files)
    return [[(i + j) % n for j in range(spec.batch)] for i in range(n)]


def grpc_messages(spec: LoadSpec, payloads: Payloads, encoded: bool) -> list[bytes]:
    from tritonclient.grpc import service_pb2 as pb

    shape = payloads.shape
    out = []
    for idx in _batches(spec, payloads):
        req = pb.ModelInferRequest(model_name=spec.model)
        tensor = req.inputs.add()
        tensor.name = shape.input_name
        if encoded:
            tensor.datatype, tensor.shape[:] = "BYTES", [len(idx)]
            blob = b"".join(
                struct.pack("<I", len(payloads.files[i])) + payloads.files[i] for i in idx
            )
        else:
            tensor.datatype = "UINT8"
            tensor.shape[:] = [len(idx), shape.height, shape.width, shape.channels]
            blob = np.ascontiguousarray(payloads.pixels[idx]).tobytes()
        req.raw_input_contents.append(blob)
        out.append(req.SerializeToString())
    return out


def multipart_bodies(spec: LoadSpec, payloads: Payloads) -> list[bytes]:
    ext = "png" if payloads.content_type == "image/png" else "jpg"
    out = []
    for idx in _batches(spec, payloads):
        model = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{spec.model}\r\n'
        ).encode()
        parts = [
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="{i}.{ext}"\r\nContent-Type: {payloads.content_type}\r\n\r\n'
            ).encode()
            + payloads.files[i]
            + b"\r\n"
            for i in idx
        ]
        out.append(model + b"".join(parts) + f"--{BOUNDARY}--\r\n".encode())
    return out


def rest_v2_bodies(spec: LoadSpec, payloads: Payloads) -> list[tuple[bytes, int]]:
    """OIP REST with the binary-tensor extension (what tritonclient.http sends): (body, JSON size)."""
    shape = payloads.shape
    out = []
    for idx in _batches(spec, payloads):
        raw = np.ascontiguousarray(payloads.pixels[idx]).tobytes()
        tensor = {
            "name": shape.input_name,
            "shape": [len(idx), shape.height, shape.width, shape.channels],
            "datatype": "UINT8",
            "parameters": {"binary_data_size": len(raw)},
        }
        header = json.dumps({"inputs": [tensor]}).encode()
        out.append((header + raw, len(header)))
    return out


# --- the closed loop ------------------------------------------------------------------------


async def grpc_sender(spec: LoadSpec, payloads: Payloads, stack: list) -> Send:
    import grpc

    messages = grpc_messages(spec, payloads, encoded=spec.target == "grpc-bytes")
    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    calls = []
    for k in range(max(1, spec.channels)):
        # NOTE: distinct channel args give distinct connections (subchannels are shared otherwise).
        channel = grpc.aio.insecure_channel(
            f"{spec.host}:{spec.port}", options=[*opts, ("visor.loadtest.channel", k)]
        )
        stack.append(channel.close)
        # NOTE: no (de)serialiser: the requests are pre-serialised bytes and the answer is only
        # checked for its status, which keeps protobuf off the client's CPU budget.
        calls.append(channel.unary_unary(MODEL_INFER))

    async def send(i: int) -> None:
        await calls[i % len(calls)](messages[i % len(messages)], timeout=spec.timeout)

    return send


def _id_field(value: str) -> bytes:
    """``ModelInferRequest.id`` (field 3) as protobuf wire bytes. Appended to a serialised message
    it sets the id (the last value of a field wins), so one message serves every worker."""
    raw = value.encode()
    assert len(raw) < 128, "one-byte varint length"
    return bytes([3 << 3 | 2, len(raw)]) + raw


async def _grpc_stream_sender(spec: LoadSpec, payloads: Payloads, stack: list) -> Send:
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    messages = grpc_messages(spec, payloads, encoded=False)
    ids = [_id_field(str(w)) for w in range(spec.concurrency)]
    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    waiting: dict[str, asyncio.Future] = {}
    queues: list[asyncio.Queue] = []
    readers: list[asyncio.Future] = []

    async def outgoing(queue: asyncio.Queue):
        while (message := await queue.get()) is not None:
            yield message

    async def incoming(call) -> None:
        # NOTE: answers come back as they finish, so they are matched to their request by id.
        try:
            async for raw in call:
                answer = pb.ModelStreamInferResponse.FromString(raw)
                future = waiting.pop(answer.infer_response.id, None)
                if future is None or future.done():
                    continue
                if answer.error_message:
                    future.set_exception(RuntimeError(answer.error_message))
                else:
                    future.set_result(None)
            ended: Exception = RuntimeError("the server ended the stream")
        except grpc.aio.AioRpcError as err:
            ended = err
        for future in waiting.values():  # NOTE: a broken stream fails its calls, never hangs them
            if not future.done():
                future.set_exception(ended)

    for k in range(max(1, spec.channels)):
        channel = grpc.aio.insecure_channel(
            f"{spec.host}:{spec.port}", options=[*opts, ("visor.loadtest.channel", k)]
        )
        queue: asyncio.Queue = asyncio.Queue()
        call = channel.stream_stream(MODEL_STREAM_INFER)(outgoing(queue))
        reader = asyncio.ensure_future(incoming(call))
        readers.append(reader)

        async def close(queue=queue, reader=reader, call=call, channel=channel) -> None:
            queue.put_nowait(None)
            reader.cancel()
            call.cancel()
            await channel.close()

        stack.append(close)
        queues.append(queue)
    loop = asyncio.get_running_loop()

    async def send(i: int) -> None:
        worker = i % spec.concurrency  # NOTE: worker w sends i = w, w + c, ...: one call at a time
        k = worker % len(queues)
        if readers[k].done():
            raise RuntimeError(f"stream {k} has ended")
        future = waiting[str(worker)] = loop.create_future()
        queues[k].put_nowait(messages[i % len(messages)] + ids[worker])
        await future

    return send


async def http_sender(spec: LoadSpec, payloads: Payloads, stack: list) -> Send:
    import aiohttp

    if spec.target == "rest-v2":
        url = f"http://{spec.host}:{spec.port}/v2/models/{spec.model}/infer"
        requests = [
            (
                body,
                {
                    "Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(size),
                },
            )
            for body, size in rest_v2_bodies(spec, payloads)
        ]
    else:
        url = f"http://{spec.host}:{spec.port}/classify"
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        requests = [(body, headers) for body in multipart_bodies(spec, payloads)]
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=spec.timeout)
    )
    stack.append(session.close)

    async def send(i: int) -> None:
        body, headers = requests[i % len(requests)]
        async with session.post(url, data=body, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")

    return send


async def run_load(spec: LoadSpec) -> LoadResult:
    payloads = Payloads.load(spec.payloads)
    stack: list = []
    make = {"grpc": grpc_sender, "grpc-bytes": grpc_sender, "grpc-stream": _grpc_stream_sender}
    send = await make.get(spec.target, http_sender)(spec, payloads, stack)
    result = LoadResult(spec.target, spec.concurrency, spec.batch)
    start = time.perf_counter()
    window_start, stop_at = start + spec.warmup, start + spec.warmup + spec.duration
    budget = [spec.max_requests]
    marks: dict[str, float] = {}

    async def worker(w: int) -> None:
        i = w
        while budget[0] > 0 and time.perf_counter() < stop_at:
            budget[0] -= 1
            t0 = time.perf_counter()
            try:
                await send(i)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and sampled
                result.errors += 1
                result.error_sample = result.error_sample or f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.01)  # a refusing server must not turn the loop into a spin
                continue
            t1 = time.perf_counter()
            # NOTE: a request counts when it *completes* inside the window, so a saturated slow
            # server (seconds per request at high concurrency) still gets its throughput measured.
            if window_start <= t1 <= stop_at:
                result.requests += 1
                result.latencies_ms.append((t1 - t0) * 1e3)
            i += spec.concurrency

    async def window_marks() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        marks["cpu0"], marks["epoch0"] = time.process_time(), time.time()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        marks["cpu1"], marks["epoch1"] = time.process_time(), time.time()

    marker = asyncio.ensure_future(window_marks())
    workers = [asyncio.ensure_future(worker(w)) for w in range(spec.concurrency)]
    try:
        # NOTE: bounded: whatever is still in flight a moment after the window is cancelled. The
        # marker is waited for too: workers that all finish just after stop_at must not cancel
        # it before it reads the CPU clock (that lost the client's CPU of the window).
        await asyncio.wait(
            [*workers, marker], timeout=max(0.0, stop_at - time.perf_counter()) + 0.5
        )
    finally:
        for task in [*workers, marker]:
            task.cancel()
        await asyncio.gather(*workers, marker, return_exceptions=True)
        end = time.perf_counter()
        for close in reversed(stack):
            await close()
    result.window_s = max(0.0, min(end, stop_at) - window_start)
    if "cpu1" in marks:
        result.client_cpu_s = marks["cpu1"] - marks["cpu0"]
        result.window_epoch = (marks["epoch0"], marks["epoch1"])
    return result


def _child(spec: LoadSpec, conn) -> None:
    conn.send(asyncio.run(run_load(spec)))
    conn.close()


def run_processes(spec: LoadSpec, procs: int) -> LoadResult:
    """Split ``spec.concurrency`` over ``procs`` client processes and merge what they measured."""
    if procs <= 1:
        return asyncio.run(run_load(spec))
    ctx = mp.get_context("spawn")
    share = [spec.concurrency // procs + (k < spec.concurrency % procs) for k in range(procs)]
    running = []
    for k, conc in enumerate(c for c in share if c):
        parent, child = ctx.Pipe()
        sub = LoadSpec(
            **{**asdict(spec), "concurrency": conc, "max_requests": spec.max_requests // procs}
        )
        proc = ctx.Process(target=_child, args=(sub, child), daemon=True)
        proc.start()
        running.append((proc, parent))
    merged = LoadResult(spec.target, spec.concurrency, spec.batch)
    for proc, parent in running:
        part: LoadResult = parent.recv()
        proc.join(timeout=10)
        merged.requests += part.requests
        merged.errors += part.errors
        merged.error_sample = merged.error_sample or part.error_sample
        merged.window_s = max(merged.window_s, part.window_s)
        merged.client_cpu_s += part.client_cpu_s
        merged.window_epoch = merged.window_epoch if merged.window_epoch[0] else part.window_epoch
        merged.latencies_ms.extend(part.latencies_ms)
    return merged


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", choices=TARGETS, required=True)
    p.add_argument("--host", default="127.0.0.1", help="loopback only (refuses anything else)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--payloads", type=Path, required=True, help="folder from loadtests.payloads")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="hard cap on requests")
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--channels", type=int, default=1, help="gRPC connections")
    p.add_argument("--procs", type=int, default=1, help="client processes sharing the concurrency")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("client: only loopback targets are allowed")
    spec = LoadSpec(
        args.target,
        args.host,
        args.port,
        args.model,
        args.payloads,
        args.concurrency,
        args.duration,
        args.warmup,
        args.max_requests,
        args.batch,
        channels=args.channels,
    )
    print(json.dumps(run_processes(spec, args.procs).summary()))


if __name__ == "__main__":
    main()
