"""Visor's benchmark: the raw ONNX Runtime limit, Visor over gRPC and HTTP, and the naive baseline,
all measured in one run on one machine, every figure reported as a ratio to the same run's limit.

    python -m loadtests.bench --model mobilenetv2          # or: make bench BENCH_MODEL=mobilenetv2
    python -m loadtests.bench --model digits --profile     # + where a request's time goes (py-spy)

Steps, each in its own process so that none slows another: (1) raw ORT throughput at batch sizes
1…64 with the server's session options; (2) Visor (`python -m service serve`, loopback, batcher
on) under a closed-loop asyncio client at each concurrency, over gRPC and HTTP; (3) the naive
Flask + `model.predict` baseline at the same concurrencies; (4) cold start (process start → model
ready) and memory at rest and under load for both servers. The server's CPU and the client's CPU
are recorded for every point.

Writes ``OUT/<stamp>/bench.json`` and, unless ``--docs ''``, updates this model's section of
``DOCS/benchmarks.md``, ``DOCS/benchmarks.json`` and the plot ``DOCS/benchmarks.png``.
A benchmark, not a test: it never fails on a machine's speed; targets are reported met/missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loadtests import procs
from loadtests.payloads import make_payloads, read_input_shape, write_photo_dataset

ROOT = procs.ROOT
BUILD = {
    "digits": ["--image-size", "16"],  # NOTE: as scripts/default-model.sh makes it
    "mobilenetv2": [
        "--model",
        "mobilenetv2",
        "--weights",
        "none",
        "--image-size",
        "224",
        "--epochs",
        "0",
        "--fine-tune-epochs",
        "0",
        "--min-test-accuracy",  # NOTE: an untrained network, for throughput only
        "0",
    ],
}


# --- setup ------------------------------------------------------------------------------------


def newest_version(models: Path, name: str) -> Path | None:
    folder = models / name
    if not folder.is_dir():
        return None
    versions = [p for p in folder.iterdir() if p.name.isdigit() and (p / "metadata.json").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def ensure_model(models: Path | None, name: str, log_dir: Path) -> tuple[Path, Path]:
    """The repository and version folder to benchmark; trains the model when it is missing."""
    candidates = [models] if models else [ROOT / "models", ROOT / "build" / "bench-models"]
    for repo in candidates:
        if (found := newest_version(repo, name)) is not None:
            return repo, found
    repo = candidates[-1]
    if name not in BUILD:
        raise SystemExit(f"bench: no model {name!r} in {repo}, and no recipe to build one")
    log = (log_dir / f"train-{name}.log").open("w")
    print(f"bench: training {name!r} into {repo} (log: {log.name})", flush=True)
    if name == "mobilenetv2":
        # NOTE: an RGB model fed real JPEG photographs, as a deployed image classifier would be.
        data = ROOT / "build" / "data" / "photos"
        if not data.exists():
            write_photo_dataset(data, per_class=40, size=224)
    else:
        data = ROOT / "build" / "data" / "digits"
        if not data.exists():
            subprocess.run(
                [sys.executable, "-m", "training", "dataset", "digits", "--out", str(data)],
                cwd=ROOT,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "--data",
            str(data),
            "--name",
            name,
            "--out",
            str(repo),
            "--work-dir",
            str(ROOT / "build" / "bench-work" / name),
            *BUILD[name],
        ],
        cwd=ROOT,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    found = newest_version(repo, name)
    if found is None:
        raise SystemExit(f"bench: training {name!r} published nothing in {repo}")
    return repo, found


def single_model_repo(version_dir: Path, repo: Path) -> tuple[Path, Path]:
    """A repository holding only the version under test, so the server loads nothing else."""
    target = repo / version_dir.parent.name / version_dir.name
    if not target.exists():
        shutil.copytree(version_dir, target)
    return repo, target


def machine() -> dict:
    import grpc
    import onnxruntime
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
        "load_avg_at_start": os.getloadavg(),
    }


# --- the measurements -------------------------------------------------------------------------


def run_json(argv: list[str], timeout: float) -> dict:
    done = subprocess.run(
        argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw_limit(
    args: argparse.Namespace, version_dir: Path, payloads: Path, batch_sizes: str | None = None
) -> dict:
    argv = [
        sys.executable,
        "-m",
        "loadtests.raw_ort",
        "--version-dir",
        str(version_dir),
        "--payloads",
        str(payloads),
        "--batch-sizes",
        batch_sizes or args.batch_sizes,
        "--seconds",
        str(args.raw_seconds),
        "--rounds",
        str(args.raw_rounds),
        "--device",
        args.device,
    ]
    n = len((batch_sizes or args.batch_sizes).split(","))
    return run_json(argv, timeout=120 + 6 * n * args.raw_seconds)


def load_point(
    args: argparse.Namespace,
    target: str,
    port: int,
    model: str,
    payloads: Path,
    concurrency: int,
    sampler: procs.ResourceSampler,
) -> dict:
    argv = procs.client_argv(
        target,
        port,
        model,
        payloads,
        concurrency,
        args.duration,
        warmup=args.warmup,
        procs=args.client_procs,
        channels=args.grpc_channels,
    )
    point = run_json(argv, timeout=60 + 3 * (args.duration + args.warmup))
    t0, t1 = point.pop("window_epoch")
    point["server_cpu_cores"] = sampler.cpu_cores(t0, t1)
    point["machine_idle_cores"] = sampler.idle_cores(t0, t1)
    point["machine_steal_cores"] = sampler.steal_cores(t0, t1)
    point["server_peak"] = sampler.peak(t0, t1)
    used = point["server_cpu_cores"] + point["client_cpu_cores"]
    point["rps_per_core"] = point["rps"] / used if used > 0 else None
    point["rps_per_server_core"] = (
        point["rps"] / point["server_cpu_cores"] if point["server_cpu_cores"] > 0 else None
    )
    print(
        f"  {target:10s} c={concurrency:<3d} {point['rps']:8.1f} req/s  p50 {point['p50_ms']:7.2f} ms"
        f"  p99 {point['p99_ms']:7.2f} ms  errors {point['errors']}  server {point['server_cpu_cores']:.2f}"
        f" + client {point['client_cpu_cores']:.2f} cores; machine idle"
        f" {point['machine_idle_cores']:.2f}, steal {point['machine_steal_cores']:.2f}",
        flush=True,
    )
    return point


Probe = Callable[[], dict]


def check_alive(server: procs.Server, point: dict) -> None:
    """Stop the run when the server under test died: its figures would be meaningless."""
    code = server.popen.poll()
    if code is not None or (point["requests"] == 0 and point["errors"] > 0):
        raise RuntimeError(
            f"{server.name} stopped answering during {point['target']} c={point['concurrency']} "
            f"(exit code {code}; {point['error_sample'][:200]}); see {server.log_path}:\n"
            + procs.tail(server.log_path, 10)
        )


def make_probe(args: argparse.Namespace, version_dir: Path, payloads: Path, best: int) -> Probe:
    """A short raw-ORT measurement (batch 1 and the best batch) to run between load points."""
    sizes = ",".join(str(b) for b in sorted({1, best}))

    def probe() -> dict:
        saved = args.raw_seconds
        args.raw_seconds = args.probe_seconds
        try:
            raw = raw_limit(args, version_dir, payloads, sizes)
        finally:
            args.raw_seconds = saved
        return {
            "best_images_per_s": raw["best_images_per_s"],
            "batch1_p50_ms": raw["batch1_p50_ms"],
        }

    return probe


def paired(before: dict, after: dict) -> dict:
    """The raw limit around one load point: the mean of the probes just before and just after."""
    return {
        "best_images_per_s": (before["best_images_per_s"] + after["best_images_per_s"]) / 2,
        "batch1_p50_ms": (before["batch1_p50_ms"] + after["batch1_p50_ms"]) / 2,
        "before": before,
        "after": after,
    }


def measure_server(
    args: argparse.Namespace,
    server: procs.Server,
    targets: list[tuple[str, int]],
    model: str,
    payloads: Path,
    probe: Probe | None = None,
    repeat: int = 0,
) -> dict:
    """Every target at every concurrency, then ``repeat`` more windows of the target points.

    The repeats (``args.repeat_concurrency``, protocols alternating) each get raw probes around
    them like the sweep's points, so a target's verdict can be the median of several paired
    windows instead of one window's luck on shared cores.
    """
    time.sleep(args.rest_s)
    at_rest = server.memory_mb()
    by_process = server.memory_by_process()
    points = []
    with procs.ResourceSampler(server) as sampler:
        before = probe() if probe else None
        for target, port in targets:
            for c in args.concurrency:
                point = load_point(args, target, port, model, payloads, c, sampler)
                check_alive(server, point)
                if probe and before:
                    after = probe()
                    point["raw_paired"] = paired(before, after)
                    before = after
                points.append(point)
        repeats = []
        for n in range(repeat if probe and before else 0):
            for target, port in targets:
                for c in args.repeat_concurrency:
                    point = load_point(args, target, port, model, payloads, c, sampler)
                    check_alive(server, point)
                    after = probe()
                    point["raw_paired"], point["repeat"] = paired(before, after), n + 1
                    before = after
                    repeats.append(point)
        peak = sampler.peak()
    return {
        "cold_start_s": server.cold_start_s,
        "memory_at_rest": at_rest,
        "memory_at_rest_by_process": by_process,
        "memory_peak_under_load": peak,
        "points": points,
        "repeats": repeats,
    }


def bench_visor(
    args: argparse.Namespace,
    repo: Path,
    model: str,
    payloads: Path,
    run_dir: Path,
    probe: Probe | None = None,
) -> dict:
    print("bench: Visor", flush=True)
    server = procs.start_visor(
        repo, model, run_dir / "visor.log", device=args.device, env=dict(args.server_env)
    )
    with server:
        print(f"  cold start {server.cold_start_s:.2f} s", flush=True)
        targets = [(p, server.port_for(p)) for p in args.protocols]
        result = measure_server(
            args, server, targets, model, payloads, probe, repeat=args.repeat_targets
        )
        if args.profile:
            from loadtests import profile

            result["profile"] = profile.profile_points(
                args, server, targets, model, payloads, run_dir
            )
    return result


def bench_naive(
    args: argparse.Namespace,
    version_dir: Path,
    model: str,
    payloads: Path,
    run_dir: Path,
    probe: Probe | None = None,
) -> dict:
    print("bench: naive baseline (Flask + model.predict)", flush=True)
    server = procs.start_naive(version_dir, run_dir / "naive.log")
    with server:
        print(f"  cold start {server.cold_start_s:.2f} s", flush=True)
        return measure_server(args, server, [("naive", server.http_port)], model, payloads, probe)


# --- figures and targets ----------------------------------------------------------------------


def point(result: dict, target: str, concurrency: int) -> dict | None:
    return next(
        (
            p
            for p in result.get("points", [])
            if p["target"] == target and p["concurrency"] == concurrency
        ),
        None,
    )


def repeated(result: dict, target: str, concurrency: int, key: str) -> list[float]:
    """``key`` of the sweep's point and of every repeat of it, in the order they ran."""
    return [
        p[key]
        for p in [*result.get("points", []), *result.get("repeats", [])]
        if p["target"] == target and p["concurrency"] == concurrency and p.get(key) is not None
    ]


def derive(bench: dict) -> None:
    """Ratios to the same run's raw limit, and each target met or missed."""
    raw, again = bench["raw"], bench.get("raw_end") or bench["raw"]
    # NOTE: the cores are shared, so the limit is measured before and after the servers and the
    # more favourable figure of the two is the one every ratio is taken against (conservative).
    best = max(raw["best_images_per_s"], again["best_images_per_s"])
    b1s = [r["batch1_p50_ms"] for r in (raw, again) if r["batch1_p50_ms"] is not None]
    b1 = min(b1s) if b1s else None
    bench["limit"] = {
        "best_images_per_s": best,
        "batch1_p50_ms": b1,
        "drift_pct": 100.0 * (again["best_images_per_s"] / raw["best_images_per_s"] - 1.0),
        # images per CPU-second of the raw loop: a yardstick that holds when other work takes
        # a varying share of the cores (the server's CPU is measured the same way per point)
        "best_images_per_cpu_s": max(
            (
                q["images_per_s"] / q["cpu_cores"]
                for r in (raw, again)
                for q in r["points"]
                if q.get("cpu_cores")
            ),
            default=None,
        ),
    }
    per_cpu = bench["limit"]["best_images_per_cpu_s"]
    for result in (bench["visor"], bench.get("naive") or {}):
        for p in [*result.get("points", []), *result.get("repeats", [])]:
            p["ratio_to_raw"] = p["images_per_s"] / best if best else None
            p["added_p50_ms"] = p["p50_ms"] - b1 if b1 is not None else None
            cores = p.get("server_cpu_cores") or 0.0
            p["cpu_efficiency_vs_raw"] = (
                p["images_per_s"] / cores / per_cpu if per_cpu and cores > 0 else None
            )
            if rp := p.get("raw_paired"):
                p["ratio_to_paired_raw"] = p["images_per_s"] / rp["best_images_per_s"]
                p["added_p50_paired_ms"] = p["p50_ms"] - rp["batch1_p50_ms"]
    targets: list[dict] = []

    def add(name: str, measured: float | None, limit: float, kind: str, unit: str = "") -> None:
        met = (
            None if measured is None else (measured >= limit if kind == ">=" else measured <= limit)
        )
        targets.append(
            {"target": name, "measured": measured, "limit": f"{kind} {limit}{unit}", "met": met}
        )

    def add_median(
        name: str, windows: list[float], limit: float, kind: str, unit: str = ""
    ) -> None:
        """A target judged on the median of the sweep's window and its repeats (two or more)."""
        if len(windows) > 1:
            add(
                f"{name}, median of {len(windows)} windows",
                statistics.median(windows),
                limit,
                kind,
                unit,
            )

    v, n = bench["visor"], bench.get("naive") or {}
    if bench["model"] != "digits":
        protos = (("grpc", 0.85, 2.0), ("grpc-stream", 0.85, 2.0), ("http", 0.70, 5.0))
        for proto, floor, added in protos:
            p32, p1 = point(v, proto, 32), point(v, proto, 1)
            if p32 is None and p1 is None and proto == "grpc-stream":
                continue  # NOTE: an extra mode, reported only when it ran
            add(
                f"{proto} throughput at c=32 / best raw ORT of the run",
                p32 and p32["ratio_to_raw"],
                floor,
                ">=",
            )
            add(
                f"{proto} throughput at c=32 / raw ORT probed around that point",
                p32 and p32.get("ratio_to_paired_raw"),
                floor,
                ">=",
            )
            add(
                f"{proto} added p50 latency at c=1 (vs the run's raw batch-1 p50)",
                p1 and p1["added_p50_ms"],
                added,
                "<=",
                " ms",
            )
            add(
                f"{proto} added p50 latency at c=1 (vs raw batch-1 p50 probed around it)",
                p1 and p1.get("added_p50_paired_ms"),
                added,
                "<=",
                " ms",
            )
            add_median(
                f"{proto} throughput at c=32 / raw ORT probed around it",
                repeated(v, proto, 32, "ratio_to_paired_raw"),
                floor,
                ">=",
            )
            add_median(
                f"{proto} added p50 latency at c=1 (vs the probes)",
                repeated(v, proto, 1, "added_p50_paired_ms"),
                added,
                "<=",
                " ms",
            )
            nv = point(n, "naive", 32)
            add(
                f"{proto} throughput at c=32 / naive baseline at c=32",
                p32 and nv and nv["rps"] and p32["rps"] / nv["rps"],
                5.0,
                ">=",
                "x",
            )
    else:
        for proto, what in (("grpc", "unary ModelInfer"), ("grpc-stream", "ModelStreamInfer")):
            rates = [p["rps"] for p in v["points"] if p["target"] == proto]
            if rates:
                add(
                    f"{proto} requests/s ({what}, best concurrency, client on the same cores)",
                    max(rates),
                    2000,
                    ">=",
                )
            windows = {
                c: w
                for c in {p["concurrency"] for p in v.get("repeats", [])}
                if len(w := repeated(v, proto, c, "rps")) > 1
            }
            if windows:
                c = max(windows, key=lambda c: statistics.median(windows[c]))
                add_median(f"{proto} requests/s at c={c}", windows[c], 2000, ">=")
    add("Visor cold start (process start -> model ready)", v["cold_start_s"], 10.0, "<=", " s")
    add(
        "Visor memory at rest (PSS of the process tree)",
        v["memory_at_rest"]["pss_mb"],
        600,
        "<=",
        " MB",
    )
    add(
        "Visor peak memory under load (PSS of the process tree)",
        v["memory_peak_under_load"]["pss_mb"],
        600,
        "<=",
        " MB",
    )
    bench["targets"] = targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="digits", help="digits | mobilenetv2 (trained when missing)")
    p.add_argument(
        "--models",
        type=Path,
        help="model repository (default: models/, then "
        "build/bench-models/, where a missing model is trained)",
    )
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated requests in flight")
    p.add_argument(
        "--protocols",
        default=None,
        help="comma-separated: grpc, grpc-bytes, grpc-stream, http, rest-v2 (default: grpc,http; "
        "for digits grpc,grpc-stream,http)",
    )
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each point")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="raw ORT batch sizes")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="seconds per raw batch size")
    p.add_argument(
        "--raw-rounds",
        type=int,
        default=3,
        help="interleaved raw passes (a batch size's median of them counts; probes too)",
    )
    p.add_argument(
        "--paired",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="probe the raw limit (batch 1 and the best batch) around every load point, so each "
        "point also has a ratio to the limit of the same minute (the cores are shared)",
    )
    p.add_argument("--probe-seconds", type=float, default=1.5, help="seconds per probe batch size")
    p.add_argument(
        "--repeat-targets",
        type=int,
        default=0,
        help="after the sweep, measure the target points this many more times (protocols "
        "alternating, raw probes around each) and judge the targets on the median as well",
    )
    p.add_argument(
        "--repeat-concurrency",
        default="1,32",
        help="comma-separated concurrencies the repeats measure (the targets' c=1 and c=32)",
    )
    p.add_argument(
        "--raw-again",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the raw limit again at the end; ratios use the better of the two",
    )
    p.add_argument(
        "--naive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the naive Flask + model.predict baseline",
    )
    p.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    p.add_argument("--grpc-channels", type=int, default=1, help="gRPC connections per client")
    p.add_argument("--rest-s", type=float, default=1.0, help="idle seconds before memory at rest")
    p.add_argument(
        "--profile",
        action="store_true",
        help="then profile the server with py-spy at --profile-concurrency",
    )
    p.add_argument("--profile-concurrency", type=int, default=32)
    p.add_argument(
        "--label",
        default="",
        help="name a variant run (e.g. workers2): kept beside the model's default run in docs/",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="VISOR_X=VALUE",
        help="a setting for the server under test (repeatable), e.g. VISOR_WORKERS=2; "
        "the raw limit is not affected",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: CUDA provider only, and fail if it is not the active one",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "loadtests" / "results",
        help="results folder (a <stamp>/ subfolder per run)",
    )
    p.add_argument(
        "--docs",
        default=str(ROOT / "docs"),
        help="folder holding benchmarks.md/.json/.png to update; '' for none",
    )
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    try:
        args.repeat_concurrency = [int(c) for c in args.repeat_concurrency.split(",") if c.strip()]
    except ValueError:
        p.error(f"--repeat-concurrency takes integers, got {args.repeat_concurrency!r}")
    if args.repeat_targets < 0 or any(c < 1 for c in args.repeat_concurrency):
        p.error("--repeat-targets must be 0 or more, --repeat-concurrency positive integers")
    if args.repeat_targets and not args.paired:
        p.error("--repeat-targets needs the raw probes around each window: drop --no-paired")
    if args.protocols is None:
        args.protocols = "grpc,grpc-stream,http" if args.model == "digits" else "grpc,http"
    args.protocols = [s.strip() for s in args.protocols.split(",") if s.strip()]
    pairs = [item.partition("=") for item in args.server_env]
    if any(not k.startswith("VISOR_") or not sep for k, sep, _ in pairs):
        p.error("--server-env takes VISOR_NAME=VALUE")
    args.server_env = [(k, v) for k, _, v in pairs]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"{stamp}-{args.model}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _, source_version = ensure_model(args.models, args.model, run_dir)
    repo, version_dir = single_model_repo(source_version, run_dir / "models")
    shape = read_input_shape(repo, args.model)
    payloads = make_payloads(shape, run_dir / "payloads", count=32)
    bench: dict = {
        "model": args.model,
        "version": int(version_dir.name),
        "model_source": str(source_version),
        "input": f"{shape.height}x{shape.width}x{shape.channels}",
        "device": args.device,
        "stamp": stamp,
        "command": "python -m loadtests.bench "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(
        f"bench: {args.model} v{version_dir.name} {bench['input']} from {source_version}; raw ONNX Runtime",
        flush=True,
    )
    bench["raw"] = raw_limit(args, version_dir, payloads)
    print(
        f"  best {bench['raw']['best_images_per_s']:.1f} images/s at batch "
        f"{bench['raw']['best_batch']}; batch-1 p50 {bench['raw']['batch1_p50_ms']:.2f} ms",
        flush=True,
    )
    probe = (
        make_probe(args, version_dir, payloads, bench["raw"]["best_batch"]) if args.paired else None
    )
    bench["visor"] = bench_visor(args, repo, args.model, payloads, run_dir, probe)
    if args.naive:
        bench["naive"] = bench_naive(args, version_dir, args.model, payloads, run_dir, probe)
    if args.raw_again:
        print("bench: raw ONNX Runtime again (drift check)", flush=True)
        sizes = ",".join(str(b) for b in sorted({1, bench["raw"]["best_batch"]}))
        bench["raw_end"] = raw_limit(args, version_dir, payloads, sizes)
        print(f"  best {bench['raw_end']['best_images_per_s']:.1f} images/s", flush=True)
    derive(bench)
    bench["wall_s"] = time.monotonic() - started
    (run_dir / "bench.json").write_text(json.dumps(bench, indent=2))
    if args.docs:
        from loadtests import report

        report.update_docs(Path(args.docs), bench)
    for t in bench["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        measured = "-" if t["measured"] is None else f"{t['measured']:.3g}"
        print(f"target: {t['target']}: {measured} ({t['limit']}) {verdict}")
    print(f"bench: done in {bench['wall_s']:.0f} s; {run_dir / 'bench.json'}")
    return bench


if __name__ == "__main__":
    main()
