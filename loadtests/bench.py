"""Visor's benchmark: the raw ONNX Runtime limit, Visor and its peers (KServe, PyTriton) serving
the same ONNX file, all measured in one run on one machine, judged on the targets table.

    python -m loadtests.bench --model mobilenetv2          # or: make bench BENCH_MODEL=mobilenetv2
    python -m loadtests.bench --model digits --peers ''    # Visor alone

Each step runs in its own process: (1) raw ORT at batch sizes 1…64 with the server's session
options; (2) every server started on loopback (Visor with its defaults, each peer whose venv
``make peers`` installed), cold start and memory at rest recorded; (3) a sweep: for each protocol
and concurrency, one window per server in turn under the closed-loop client (its own process),
each window paired with short raw probes run just before and just after it; (4)
``--repeat-targets`` more rounds of the target points, servers alternating (order reversed on
odd rounds), probes around each window; (5) raw ORT again. Targets come from
``loadtests/targets.toml`` and are judged on the median of the paired windows.

Writes ``OUT/<stamp>-<model>/bench.json`` and, unless ``--docs ''``, this model's block of
``DOCS/benchmarks.md`` and ``DOCS/benchmarks.{json,png}`` (rendered from the JSON). A benchmark,
not a test: it never fails on a machine's speed; targets are reported met/missed.
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
import tomllib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from loadtests import peers, procs
from loadtests.payloads import make_payloads, read_input_shape, write_photo_dataset

ROOT = procs.ROOT
TARGETS_TABLE = Path(__file__).with_name("targets.toml")
# NOTE: digits as scripts/default-model.sh makes it; MobileNetV2 untrained (for speed only)
BUILD = {
    "digits": ["--image-size", "16"],
    "mobilenetv2": ["--model", "mobilenetv2", "--weights", "none", "--image-size", "224",
                    "--epochs", "0", "--fine-tune-epochs", "0", "--min-test-accuracy", "0"],
}  # fmt: skip
VISOR_PROTOCOLS = ("grpc", "grpc-bytes", "grpc-stream", "http", "rest-v2")
Probe = Callable[[], dict]


# --- setup ------------------------------------------------------------------------------------


def newest_version(models: Path, name: str) -> Path | None:
    folder = models / name
    versions = [p for p in folder.glob("*") if p.name.isdigit() and (p / "metadata.json").exists()]
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
    data = ROOT / "build" / "data" / ("photos" if name == "mobilenetv2" else "digits")
    python = [sys.executable, "-m", "training"]
    if not data.exists() and name == "mobilenetv2":
        write_photo_dataset(data, per_class=40, size=224)  # real JPEG photographs, RGB
    elif not data.exists():
        argv = [*python, "dataset", "digits", "--out", str(data)]
        subprocess.run(argv, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    argv = [*python, "train", "--data", str(data), "--name", name, "--out", str(repo)]
    argv += ["--work-dir", str(ROOT / "build" / "bench-work" / name), *BUILD[name]]
    subprocess.run(argv, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    if (found := newest_version(repo, name)) is None:
        raise SystemExit(f"bench: training {name!r} published nothing in {repo}")
    return repo, found


def model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--models`` as every experiment that serves one model takes them."""
    p.add_argument("--model", default="digits", help="digits | mobilenetv2 (trained when missing)")
    p.add_argument("--models", type=Path, help="model repository (default: models/, then build/)")


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

    cpuinfo = Path("/proc/cpuinfo")
    names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    return {
        "cpu": names[0].split(":", 1)[1].strip() if names else platform.processor(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
        "load_avg_at_start": os.getloadavg(),
    }


def load_targets(model: str, path: Path = TARGETS_TABLE) -> list[dict]:
    """The rows of the targets table that apply to ``model``."""
    rows = tomllib.loads(path.read_text())["target"]
    return [row for row in rows if row["model"] in (model, "*")]


# --- the measurements -------------------------------------------------------------------------


def run_json(argv: list[str], timeout: float) -> dict:
    done = subprocess.run(
        argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv[:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw_limit(
    args: argparse.Namespace, version_dir: Path, payloads: Path, sizes: str, seconds: float
) -> dict:
    argv = [sys.executable, "-m", "loadtests.raw_ort", "--version-dir", str(version_dir)]
    argv += ["--payloads", str(payloads), "--batch-sizes", sizes, "--seconds", str(seconds)]
    argv += ["--rounds", str(args.raw_rounds), "--device", args.device]
    return run_json(argv, timeout=120 + 6 * len(sizes.split(",")) * seconds)


def make_probe(args: argparse.Namespace, version_dir: Path, payloads: Path, best: int) -> Probe:
    """A short raw-ORT measurement (batch 1 and the best batch) to run between windows."""
    sizes = ",".join(str(b) for b in sorted({1, best}))

    def probe() -> dict:
        raw = raw_limit(args, version_dir, payloads, sizes, args.probe_seconds)
        return {k: raw[k] for k in ("best_images_per_s", "batch1_p50_ms")}

    return probe


def window(
    args: argparse.Namespace,
    server: procs.Server,
    target: str,
    concurrency: int,
    model: str,
    payloads: Path,
) -> dict:
    """One measured window of ``server`` under the closed-loop client, with its CPU and memory."""
    argv = procs.client_argv(
        target, server.port_for(target), model, payloads, concurrency, args.duration,
        warmup=args.warmup, procs=args.client_procs, channels=args.grpc_channels,
    )  # fmt: skip
    with procs.ResourceSampler(server) as sampler:
        point = run_json(argv, timeout=60 + 3 * (args.duration + args.warmup))
    t0, t1 = point.pop("window_epoch")
    point.update(
        server=server.name,
        server_cpu_cores=sampler.cpu_cores(t0, t1),
        loop_cores=sampler.loop_cores(t0, t1),
        machine_idle_cores=sampler.idle_cores(t0, t1),
        machine_steal_cores=sampler.steal_cores(t0, t1),
        server_peak=sampler.peak(t0, t1),
    )
    code = server.popen.poll()
    if code is not None or (point["requests"] == 0 and point["errors"] > 0):
        raise RuntimeError(
            f"{server.name} stopped answering during {target} c={concurrency} (exit code {code}; "
            f"{point['error_sample'][:200]}); see {server.log_path}:\n{procs.tail(server.log_path, 10)}"
        )
    print(
        f"  {server.name:8s} {target:10s} c={concurrency:<3d} {point['rps']:8.1f} req/s"
        f"  p50 {point['p50_ms']:7.2f} ms  p99 {point['p99_ms']:7.2f} ms  errors {point['errors']}"
        f"  server {point['server_cpu_cores']:.2f} + client {point['client_cpu_cores']:.2f} cores",
        flush=True,
    )
    return point


def start_servers(
    args: argparse.Namespace,
    stack: ExitStack,
    repo: Path,
    version_dir: Path,
    model: str,
    run_dir: Path,
) -> dict:
    """Visor and every peer asked for, each up before the first window; a peer that cannot run
    is recorded with the reason (``skipped``) and the run goes on without it."""
    env = dict(args.server_env)
    results: dict[str, dict] = {}
    starters = {
        "visor": lambda: procs.start_visor(
            repo, model, run_dir / "visor.log", device=args.device, env=env
        )
    }
    for name in args.peers:
        if why := peers.missing(name):
            results[name] = {"skipped": why}
        else:
            starters[name] = lambda name=name: peers.start_peer(
                name, version_dir, model, run_dir / f"{name}.log"
            )
    for name, start in starters.items():
        try:
            server = stack.enter_context(start())
        except (RuntimeError, TimeoutError) as err:
            if name == "visor":
                raise
            results[name] = {"skipped": f"failed to start: {err}"[:2000]}
            continue
        print(f"bench: {name} ready, cold start {server.cold_start_s:.2f} s", flush=True)
        results[name] = {"server": server, "cold_start_s": server.cold_start_s, "points": []}
    time.sleep(args.rest_s)
    for result in results.values():
        if server := result.get("server"):
            result["memory_at_rest"] = server.memory_mb()
            result["memory_at_rest_by_process"] = server.memory_by_process()
            result["rest_rss_mb"] = result["memory_at_rest"]["rss_mb"]
            result["rest_pss_mb"] = result["memory_at_rest"]["pss_mb"]
    return results


def protocols_of(name: str) -> tuple[str, ...]:
    return VISOR_PROTOCOLS if name == "visor" else peers.PEERS[name][1]


def measure(
    args: argparse.Namespace,
    results: dict,
    model: str,
    payloads: Path,
    probe: Probe | None,
    table: list[dict],
) -> None:
    """The sweep, then the repeats of the target points; every window between two raw probes."""
    running = [name for name, r in results.items() if "server" in r]
    before = probe() if probe else None

    def one(name: str, target: str, concurrency: int, repeat: int) -> None:
        nonlocal before
        point = window(args, results[name]["server"], target, concurrency, model, payloads)
        if probe and before:
            after = probe()
            point["raw_paired"] = {
                k: (before[k] + after[k]) / 2 for k in ("best_images_per_s", "batch1_p50_ms")
            } | {"before": before, "after": after}
            before = after
        results[name]["points"].append({**point, "repeat": repeat})

    for target in args.protocols:
        for c in args.concurrency:
            for name in running:
                if target in protocols_of(name):
                    one(name, target, c, 0)
    at = {(row["protocol"], row["concurrency"]) for row in table if row["concurrency"]}
    repeat_points = [
        (t, c)
        for t in args.protocols
        for c in args.repeat_concurrency or sorted(c for p, c in at if p == t)
    ]
    for rep in range(1, args.repeat_targets + 1):
        order = running if rep % 2 == 0 else running[::-1]
        for target, c in repeat_points:
            for name in order:
                if target in protocols_of(name):
                    one(name, target, c, rep)
    for result in results.values():
        if server := result.pop("server", None):
            peaks = [p["server_peak"] for p in result["points"]] or [server.memory_mb()]
            result["memory_peak_under_load"] = {
                k: max(p[k] for p in peaks) for k in ("rss_mb", "pss_mb")
            }


# --- figures and targets ----------------------------------------------------------------------


def derive(bench: dict, table: list[dict]) -> None:
    """Each window's figures against the raw limit, then every target of ``table`` judged."""
    raw, again = bench["raw"], bench.get("raw_end") or bench["raw"]
    # NOTE: the cores are shared: the limit of the run is the better of the two raw figures
    b1s = [r["batch1_p50_ms"] for r in (raw, again) if r["batch1_p50_ms"] is not None]
    bench["limit"] = {
        "best_images_per_s": max(raw["best_images_per_s"], again["best_images_per_s"]),
        "batch1_p50_ms": min(b1s) if b1s else None,
        "drift_pct": 100.0 * (again["best_images_per_s"] / raw["best_images_per_s"] - 1.0),
    }
    for result in bench["servers"].values():
        for p in result.get("points", []):
            ref = p.get("raw_paired") or bench["limit"]
            p["ratio_to_raw"] = p["images_per_s"] / ref["best_images_per_s"]
            p["added_p50_ms"] = (
                None if ref["batch1_p50_ms"] is None else p["p50_ms"] - ref["batch1_p50_ms"]
            )
            p["peak_pss_mb"] = p["server_peak"]["pss_mb"]
    bench["targets"] = [judge(row, bench["servers"]) for row in table]


def judge(row: dict, servers: dict) -> dict:
    """One row of the targets table: Visor's figure and verdict, and each peer's figure."""
    figures: dict[str, float | None] = {}
    windows: dict[str, list[float]] = {}
    for name, result in servers.items():
        if row["judge"] == "once":
            values = [] if result.get(row["metric"]) is None else [result[row["metric"]]]
        else:
            values = [
                p[row["metric"]]
                for p in result.get("points", [])
                if (p["target"], p["concurrency"]) == (row["protocol"], row["concurrency"])
                and p.get(row["metric"]) is not None
            ]
        worst = max if row["compare"] == "<=" else min
        pick = {"median": statistics.median, "max": worst, "once": worst}[row["judge"]]
        windows[name], figures[name] = values, pick(values) if values else None
    measured = figures.get("visor")
    if (peer := row.get("relative_to")) is not None:
        # a ratio to a peer's figure of the same run: the machine's load cancels out
        base = figures.get(peer)
        measured = None if measured is None or not base else measured / base
    met = None
    if measured is not None:
        met = measured <= row["limit"] if row["compare"] == "<=" else measured >= row["limit"]
    return {**row, "measured": measured, "met": met, "windows": windows, "by_server": figures}


# --- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add = p.add_argument
    add("--model", default="digits", help="digits | mobilenetv2 (trained when missing)")
    add(
        "--models",
        type=Path,
        help="model repository (default: models/, then build/bench-models/, where a missing model is trained)",
    )
    add("--concurrency", default="1,8,32,64", help="comma-separated requests in flight")
    add(
        "--protocols",
        help="comma-separated client targets (default: grpc and those of the model's targets)",
    )
    add(
        "--peers",
        default=",".join(peers.PEERS),
        help="comma-separated peer servers ('' for none); a peer without its venv is reported 'not installed'",
    )
    add("--targets", type=Path, default=TARGETS_TABLE, help="the targets table (TOML)")
    add("--duration", type=float, default=6.0, help="measured seconds per window")
    add("--warmup", type=float, default=1.5, help="unmeasured seconds before each window")
    add("--batch-sizes", default="1,2,4,8,16,32,64", help="raw ORT batch sizes")
    add("--raw-seconds", type=float, default=3.0, help="seconds per raw batch size")
    add(
        "--raw-rounds",
        type=int,
        default=3,
        help="interleaved raw passes (a batch size's median counts; probes too)",
    )
    add(
        "--paired",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="probe the raw limit (batch 1 and the best batch) around every window",
    )
    add("--probe-seconds", type=float, default=1.5, help="seconds per probe batch size")
    add(
        "--repeat-targets",
        type=int,
        default=2,
        help="rounds of the target points after the sweep (servers alternating, probes around each window)",
    )
    add(
        "--repeat-concurrency",
        default="",
        help="comma-separated concurrencies the repeats measure (default: the targets')",
    )
    add(
        "--raw-again",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the raw limit again at the end; ratios to the run's limit use the better",
    )
    add("--client-procs", type=int, default=1, help="load generator processes")
    add("--grpc-channels", type=int, default=1, help="gRPC connections per client")
    add("--rest-s", type=float, default=1.0, help="idle seconds before memory at rest")
    add(
        "--label",
        default="",
        help="name a variant run (e.g. workers2): kept beside the model's default run in docs/",
    )
    add(
        "--server-env",
        action="append",
        default=[],
        metavar="VISOR_X=VALUE",
        help="a setting for Visor (repeatable), e.g. VISOR_WORKERS=2",
    )
    add(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: CUDA provider only (Visor and the raw limit), and fail if it is not the active one",
    )
    add(
        "--out",
        type=Path,
        default=ROOT / "loadtests" / "results",
        help="results folder (a <stamp>/ subfolder per run)",
    )
    add(
        "--docs",
        default=str(ROOT / "docs"),
        help="folder holding benchmarks.md/.json/.png to update; '' for none",
    )
    args = p.parse_args(argv)
    ints = lambda text: [int(c) for c in text.split(",") if c.strip()]
    try:
        args.concurrency, args.repeat_concurrency = (
            ints(args.concurrency),
            ints(args.repeat_concurrency),
        )
    except ValueError:
        p.error("--concurrency and --repeat-concurrency take comma-separated integers")
    if args.repeat_targets < 0 or any(c < 1 for c in args.concurrency + args.repeat_concurrency):
        p.error("--repeat-targets must be 0 or more, concurrencies positive integers")
    if args.repeat_targets and not args.paired:
        p.error("--repeat-targets needs the raw probes around each window: drop --no-paired")
    if args.protocols is None:
        wanted = [
            row["protocol"] for row in load_targets(args.model, args.targets) if row["protocol"]
        ]
        args.protocols = ",".join(dict.fromkeys(["grpc", *wanted]))
    args.protocols = [s.strip() for s in args.protocols.split(",") if s.strip()]
    if bad := set(args.protocols) - set(VISOR_PROTOCOLS):
        p.error(f"--protocols: unknown {', '.join(sorted(bad))}")
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    if bad := set(args.peers) - set(peers.PEERS):
        p.error(f"--peers: unknown {', '.join(sorted(bad))} (known: {', '.join(peers.PEERS)})")
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
    table = load_targets(args.model, args.targets)
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
        "commit": procs.commit_of(ROOT),
        "command": "python -m loadtests.bench "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(f"bench: {args.model} v{version_dir.name} {bench['input']}; raw ONNX Runtime", flush=True)
    bench["raw"] = raw = raw_limit(args, version_dir, payloads, args.batch_sizes, args.raw_seconds)
    print(
        f"  best {raw['best_images_per_s']:.1f} images/s at batch {raw['best_batch']}; batch-1 p50 {raw['batch1_p50_ms']:.2f} ms",
        flush=True,
    )
    probe = make_probe(args, version_dir, payloads, raw["best_batch"]) if args.paired else None
    with ExitStack() as stack:
        bench["servers"] = start_servers(args, stack, repo, version_dir, args.model, run_dir)
        measure(args, bench["servers"], args.model, payloads, probe, table)
    if args.raw_again:
        sizes = ",".join(str(b) for b in sorted({1, raw["best_batch"]}))
        bench["raw_end"] = raw_limit(args, version_dir, payloads, sizes, args.raw_seconds)
    derive(bench, table)
    bench["wall_s"] = time.monotonic() - started
    (run_dir / "bench.json").write_text(json.dumps(bench, indent=2))
    if args.docs:
        from loadtests import report

        report.update_docs(Path(args.docs), bench)
    for name, result in bench["servers"].items():
        if "skipped" in result:
            print(f"bench: {name}: {result['skipped'].splitlines()[0]}")
    for t in bench["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        measured = "-" if t["measured"] is None else f"{t['measured']:.3g}"
        print(f"target {t['id']}: {measured} ({t['compare']} {t['limit']}, {t['judge']}) {verdict}")
    print(f"bench: done in {bench['wall_s']:.0f} s; {run_dir / 'bench.json'}")
    return bench


if __name__ == "__main__":
    main()
