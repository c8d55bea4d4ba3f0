"""Overload: how fast does a server past its queue say no? Refusal latency per protocol.

    python -m loadtests.overload --models models --model digits --queue 16 --concurrency 64 \
        --seconds 20 --docs docs/benchmarks.md

For each protocol it starts its own Visor with ``VISOR_MAX_QUEUE_SIZE=--queue`` on free loopback
ports and runs ``--concurrency`` closed-loop clients (one image per request) for ``--seconds``
after ``--warmup``: at 64 clients and a queue of 16 that is 4x what the server will hold. Each
answer is timed and sorted into served, refused (HTTP 503 / gRPC RESOURCE_EXHAUSTED or
UNAVAILABLE) and other errors; a client waits 10 ms after a refusal, as a polite client would.
Writes ``loadtests/results/overload-<stamp>.json``; ``--docs`` rewrites the block between
``<!-- overload:begin -->`` and ``<!-- overload:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loadtests import procs
from loadtests.client import LoadSpec, grpc_sender, http_sender
from loadtests.payloads import Payloads

TARGETS = {
    "rest-v2": "REST v2 (binary tensor)",
    "http": "/classify (multipart)",
    "grpc": "gRPC",
    "livez": "floor: GET /livez (no model)",
}
TARGET_P99_MS = 50.0


def outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "served"
    code = getattr(exc, "code", None)
    if callable(code) and code().name in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        return "refused"
    return "refused" if str(exc).startswith("HTTP 503") else "error"


async def livez_sender(spec: LoadSpec, _payloads: Payloads, stack: list) -> Callable:
    """The cheapest HTTP route through the same stack: what no refusal can beat on this machine."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=spec.concurrency))
    stack.append(session.close)
    url = f"http://{spec.host}:{spec.port}/livez"

    async def send(_i: int) -> None:
        async with session.get(url) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")

    return send


async def closed_loop(spec: LoadSpec) -> dict[str, list[float]]:
    """Latencies (ms) by outcome, of answers that arrive inside the measured window."""
    payloads = Payloads.load(spec.payloads)
    stack: list = []
    make = {"grpc": grpc_sender, "livez": livez_sender}.get(spec.target, http_sender)
    send = await make(spec, payloads, stack)
    seen: dict[str, list[float]] = {"served": [], "refused": [], "error": []}
    start = time.perf_counter()
    window, stop = start + spec.warmup, start + spec.warmup + spec.duration

    async def client(i: int) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await send(i)
                kind = outcome(None)
            except Exception as exc:  # noqa: BLE001 - every answer is sorted, none is fatal
                kind = outcome(exc)
            t1 = time.perf_counter()
            if window <= t1 <= stop:
                seen[kind].append((t1 - t0) * 1e3)
            if kind != "served":
                await asyncio.sleep(0.01)
            i += spec.concurrency

    try:
        await asyncio.wait_for(
            asyncio.gather(*(client(i) for i in range(spec.concurrency))),
            timeout=spec.warmup + spec.duration + spec.timeout,
        )
    finally:
        for close in reversed(stack):
            await close()
    return seen


def summarise(seen: dict[str, list[float]], seconds: float) -> dict:
    out: dict = {}
    for kind, values in seen.items():
        lat = np.asarray(values) if values else np.asarray([np.nan])
        out[kind] = {
            "count": len(values),
            "per_s": len(values) / seconds,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
        }
    return out


def server_p99_bound_ms(metrics: str, status: str = "503") -> float | None:
    """Upper bound of the p99 of BentoML's own request-duration histogram for one status.

    That histogram times the ASGI app only (no socket, parsing or wait for the event loop): next
    to the client's figure it tells the server's own work from the time spent waiting for a CPU.
    """
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if (
                sample.name == "bentoml_service_request_duration_seconds_bucket"
                and sample.labels.get("http_response_code") == status
            ):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return None
    return next(le * 1e3 for le in sorted(buckets) if buckets[le] >= 0.99 * total)


def run_target(args: argparse.Namespace, target: str, payloads: Path, run_dir: Path) -> dict:
    env = {"VISOR_MAX_QUEUE_SIZE": str(args.queue)}
    log = run_dir / f"server-{target}.log"
    with procs.start_visor(args.models, args.model, log, env=env, tree=args.tree) as server:
        spec = LoadSpec(
            target, procs.LOOPBACK, server.port_for(target), args.model, payloads,
            args.concurrency, args.seconds, warmup=args.warmup, timeout=30.0,
        )  # fmt: skip
        seen = asyncio.run(closed_loop(spec))
        metrics = urllib.request.urlopen(f"http://{procs.LOOPBACK}:{server.http_port}/metrics")
        server_ms = (
            None if target.startswith("grpc") else server_p99_bound_ms(metrics.read().decode())
        )
    return {
        "target": target,
        **summarise(seen, args.seconds),
        "server_refusal_p99_le_ms": server_ms,
    }


def render(run: dict) -> str:
    lines = [
        (
            f"### Overload — run {run['stamp']} ({run['commit']}, {run['model']}, queue "
            f"{run['queue']} images, {run['concurrency']} clients = "
            f"{run['concurrency'] / run['queue']:g}x, {run['seconds']:g} s per protocol)"
        ),
        "",
        f"`{run['command']}`",
        "",
        (
            "| protocol | served/s | served p50 / p99 (ms) | refused/s | refused p50 / p99 / max (ms) "
            "| server's own refusal p99 (ms) | other errors | refusal p99 < 50 ms |"
        ),
        "| --- | ---: | --- | ---: | --- | --- | ---: | --- |",
    ]
    for r in run["targets"]:
        ok, no = r["served"], r["refused"]
        meets = "yes" if no["count"] and no["p99_ms"] < TARGET_P99_MS else "**no**"
        refused = f"{no['p50_ms']:.1f} / {no['p99_ms']:.1f} / {no['max_ms']:.0f}"
        if not no["count"]:
            meets, refused = "n/a (nothing refused)", "-"
        lines.append(
            f"| {TARGETS[r['target']]} | {ok['per_s']:.0f} | {ok['p50_ms']:.1f} / {ok['p99_ms']:.1f} "
            f"| {no['per_s']:.0f} | {refused} | {_server(r)} | {r['error']['count']} | {meets} |"
        )
    return "\n".join(lines)


def _server(r: dict) -> str:
    bound = r.get("server_refusal_p99_le_ms")
    return (
        "n/a (gRPC)"
        if r["target"].startswith("grpc")
        else ("-" if bound is None else f"≤ {bound:g}")
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    procs.add_run_args(p, "overload")
    p.add_argument(
        "--targets",
        nargs="+",
        choices=list(TARGETS),
        default=list(TARGETS),
        help="livez: the floor, the cheapest route with the same clients",
    )
    p.add_argument("--queue", type=int, default=16, help="VISOR_MAX_QUEUE_SIZE of the server")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per protocol")
    p.add_argument("--warmup", type=float, default=3.0)
    args = p.parse_args(argv)
    run, payloads = procs.start_run(args, "overload", argv)
    run.update(queue=args.queue, concurrency=args.concurrency, seconds=args.seconds)
    run["targets"] = [run_target(args, t, payloads, payloads.parent) for t in args.targets]
    procs.finish_run(args, "overload", run, render(run), "## Overload: refusals past the queue")


if __name__ == "__main__":
    main()
