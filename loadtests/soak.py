"""Soak: does the server's memory stay flat under minutes of steady load, per protocol?

    python -m loadtests.soak --models models --model digits --minutes 5 --docs docs/benchmarks.md

For each protocol (REST v2 binary tensor, multipart ``/classify``, gRPC raw tensor) it starts its
own Visor on free loopback ports, runs ``loadtests.client`` closed-loop (``--concurrency``
requests in flight, bounded in time and count) for ``--warmup`` + ``--minutes`` minutes, samples
the BentoML worker's RSS every ``--every`` seconds (psutil), and fits a line (scipy
``linregress``) through the samples after the warm-up: the slope, in MB per minute, is the
figure. A leak grows without end; a cache or arena fills during the warm-up and then stays flat.
Writes ``loadtests/results/soak-<stamp>.json``; ``--docs`` rewrites the block between
``<!-- soak:begin -->`` and ``<!-- soak:end -->`` (``--baseline`` adds an earlier run's rows).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
from scipy import stats

from loadtests import procs

PROTOCOLS = {"rest-v2": "REST v2 (binary tensor)", "http": "/classify (multipart)", "grpc": "gRPC"}
TARGET_MB_PER_MIN = 1.0


def worker_process(server: procs.Server) -> psutil.Process:
    """The process that serves: BentoML's worker (HTTP + gRPC), else the server itself."""
    for proc in server.processes():
        try:
            if "_bentoml_impl.worker" in " ".join(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    return psutil.Process(server.popen.pid)


def sample_rss(proc: psutil.Process, every: float, stop: threading.Event) -> list[list[float]]:
    """``[seconds since start, RSS MB]`` every ``every`` seconds until ``stop`` is set."""
    samples: list[list[float]] = []
    start = time.monotonic()
    while not stop.is_set():
        try:
            samples.append([time.monotonic() - start, proc.memory_info().rss / 2**20])
        except psutil.NoSuchProcess:
            break
        stop.wait(every)
    return samples


def fit_slope(samples: list[list[float]], warmup_s: float) -> dict:
    """Least-squares slope of RSS after the warm-up, in MB per minute."""
    kept = [(t / 60, mb) for t, mb in samples if t >= warmup_s]
    if len(kept) < 3:
        return {"mb_per_min": None, "samples": len(kept)}
    minutes, mb = zip(*kept, strict=True)
    fit = stats.linregress(minutes, mb)
    return {
        "mb_per_min": float(fit.slope),
        "stderr": float(fit.stderr),
        "r": float(fit.rvalue),
        "samples": len(kept),
        "rss_start_mb": float(mb[0]),
        "rss_end_mb": float(mb[-1]),
        "rss_max_mb": float(max(mb)),
    }


def soak_one(args: argparse.Namespace, target: str, payloads: Path, run_dir: Path) -> dict:
    warmup_s, load_s = args.warmup * 60, args.minutes * 60
    server = procs.start_visor(
        args.models, args.model, run_dir / f"server-{target}.log", tree=args.tree
    )
    with server:
        worker = worker_process(server)
        stop = threading.Event()
        samples: list[list[float]] = []
        sampler = threading.Thread(
            target=lambda: samples.extend(sample_rss(worker, args.every, stop)), daemon=True
        )
        argv = procs.client_argv(
            target,
            server.port_for(target),
            args.model,
            payloads,
            args.concurrency,
            load_s,
            warmup=warmup_s,
            max_requests=args.max_requests,
        )
        sampler.start()
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            cwd=procs.ROOT,
            timeout=warmup_s + load_s + 120,
        )
        stop.set()
        sampler.join()
    if done.returncode != 0:
        raise RuntimeError(f"load client failed on {target}:\n{done.stderr[-2000:]}")
    load = json.loads(done.stdout.strip().splitlines()[-1])
    fit = fit_slope(samples, warmup_s)
    requests_after_warmup = load["requests"]
    bytes_per_request = (
        fit["mb_per_min"] * args.minutes * 2**20 / requests_after_warmup
        if fit["mb_per_min"] is not None and requests_after_warmup
        else None
    )
    keep = ("requests", "errors", "error_sample", "rps", "p50_ms", "p99_ms")
    return {
        "target": target,
        **fit,
        "bytes_per_request": bytes_per_request,
        "load": {k: load[k] for k in keep},
        "rss_samples": samples,
    }


def render(run: dict, baseline: dict | None) -> str:
    lines = [
        (
            f"### Soak — run {run['stamp']} ({run['commit']}, {run['model']}, "
            f"c={run['concurrency']}, {run['warmup_min']:g} min warm-up + {run['minutes']:g} min "
            "fitted per protocol)"
        ),
        "",
        f"`{run['command']}`",
        "",
        (
            "| run | protocol | requests/s | errors | RSS after warm-up → end (MB) "
            "| slope (MB/min) | bytes/request | < 1 MB/min |"
        ),
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for label, r in [("this", run), ("baseline", baseline)]:
        if r is None:
            continue
        name = label if label == "this" else f"baseline {r['commit']} ({r['minutes']:g} min)"
        for p in r["protocols"]:
            slope = p["mb_per_min"]
            ok = "yes" if slope is not None and slope < TARGET_MB_PER_MIN else "**no**"
            lines.append(
                f"| {name} | {PROTOCOLS[p['target']]} | {p['load']['rps']:.0f} "
                f"| {p['load']['errors']} | {p['rss_start_mb']:.1f} → {p['rss_end_mb']:.1f} "
                f"| {slope:+.2f} ± {p['stderr']:.2f} | {p['bytes_per_request'] or 0:+.0f} | {ok} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    procs.add_run_args(p, "soak")
    p.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    p.add_argument("--minutes", type=float, default=5.0, help="fitted minutes of load")
    p.add_argument("--warmup", type=float, default=1.0, help="minutes of load before the fit")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--every", type=float, default=2.0, help="seconds between RSS samples")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="hard cap per protocol")
    p.add_argument("--baseline", type=Path, help="an earlier soak JSON shown beside this run")
    args = p.parse_args(argv)
    run, payloads = procs.start_run(args, "soak", argv)
    run.update(concurrency=args.concurrency, minutes=args.minutes, warmup_min=args.warmup)
    run["protocols"] = [soak_one(args, t, payloads, payloads.parent) for t in args.protocols]
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    block = render(run, baseline)
    procs.finish_run(args, "soak", run, block, "## Soak: memory under steady load")


if __name__ == "__main__":
    main()
