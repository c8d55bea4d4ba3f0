"""A bounded, headless locust run against a Visor server that this script starts (`make loadtest`).

    python -m loadtests.loadtest --models models --model digits --users 16 --spawn-rate 8 \
        --run-time 30s --mix classify=3,v2_infer=1,grpc_raw=3,grpc_bytes=1

Starts ``python -m service serve`` on free loopback ports (HTTP and gRPC), writes payloads for the
model, runs locust (``loadtests/locustfile.py``) for ``--run-time``, then stops the server. Locust's
CSV files and HTML report land in ``RESULTS/<stamp>-loadtest/``; one summary line goes to stdout.
Exit status 1 when nothing succeeded or the failure ratio is over ``--max-failure-ratio``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

from loadtests import procs
from loadtests.payloads import make_payloads, read_input_shape

# NOTE: here, not in the locustfile: importing locust monkey-patches the process for gevent.
DEFAULT_MIX = "classify=3,v2_infer=1,grpc_raw=3,grpc_bytes=1"
TASK_NAMES = ("classify", "v2_infer", "grpc_raw", "grpc_bytes")


def parse_mix(text: str) -> dict[str, int]:
    """``classify=3,grpc_raw=1`` → a weight for every task (unnamed ones 0); ValueError if bad."""
    mix = dict.fromkeys(TASK_NAMES, 0)
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, weight = item.partition("=")
        if name not in mix or not weight.isdigit():
            raise ValueError(f"--mix: expected NAME=INT with NAME in {list(mix)}, got {item!r}")
        mix[name] = int(weight)
    if not any(mix.values()):
        raise ValueError("--mix: every weight is 0")
    return mix


def seconds(text: str) -> float:
    """locust's run-time syntax (``90``, ``30s``, ``2m``, ``1h30m``) → seconds."""
    if text.isdigit():
        return float(text)
    parts = re.findall(r"(\d+)\s*([hms])", text)
    if not parts:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def read_stats(stats_csv: Path) -> tuple[list[dict], dict]:
    """locust's ``*_stats.csv`` → (one row per request name, the Aggregated row)."""
    with stats_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)
    if total is None:
        raise RuntimeError(f"no Aggregated row in {stats_csv}")
    return [r for r in rows if r is not total], total


def summary_line(row: dict, out: Path) -> str:
    count, failures = int(row["Request Count"]), int(row["Failure Count"])
    ratio = failures / count if count else 0.0
    return (
        f"loadtest: {count} requests, {float(row['Requests/s']):.1f} req/s, {failures} failures "
        f"({100 * ratio:.2f}%), p50 {row['50%']} ms, p95 {row['95%']} ms, p99 {row['99%']} ms "
        f"-- reports in {out}"
    )


def run(args: argparse.Namespace) -> int:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / f"{stamp}-loadtest"
    out.mkdir(parents=True, exist_ok=True)
    payloads = make_payloads(read_input_shape(args.models, args.model), out / "payloads", count=32)
    with procs.start_visor(args.models, args.model, out / "server.log") as server:
        print(
            f"loadtest: Visor ready in {server.cold_start_s:.1f} s (HTTP 127.0.0.1:"
            f"{server.http_port}, gRPC 127.0.0.1:{server.grpc_port})",
            flush=True,
        )
        argv = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(procs.ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "--only-summary",
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            args.run_time,
            "--stop-timeout",
            "5",
            "--host",
            f"http://{procs.LOOPBACK}:{server.http_port}",
            "--grpc-target",
            f"{procs.LOOPBACK}:{server.grpc_port}",
            "--payloads",
            str(payloads),
            "--model",
            args.model,
            "--mix",
            args.mix,
            "--csv",
            str(out / "locust"),
            "--html",
            str(out / "report.html"),
            "--exit-code-on-error",
            "0",
            "--loglevel",
            "WARNING",
        ]
        with (out / "locust.log").open("w") as log:
            done = subprocess.run(
                argv,
                check=False,
                cwd=procs.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=seconds(args.run_time) + 90,
            )
    if done.returncode != 0:
        print(procs.tail(out / "locust.log"), file=sys.stderr)
        print(f"loadtest: locust exited with {done.returncode}", file=sys.stderr)
        return 1
    per_name, row = read_stats(out / "locust_stats.csv")
    for r in per_name:
        print(
            f"  {r['Name']:45s} {int(r['Request Count']):7d} req {float(r['Requests/s']):8.1f}/s "
            f"{int(r['Failure Count']):5d} failed  p50 {r['50%']} ms  p99 {r['99%']} ms"
        )
    print(summary_line(row, out))
    count, failures = int(row["Request Count"]), int(row["Failure Count"])
    if count == failures or failures > args.max_failure_ratio * count:
        print(
            f"loadtest: failures over {100 * args.max_failure_ratio:.1f}%; see "
            f"{out / 'locust_failures.csv'}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models"), help="model repository to serve")
    p.add_argument("--model", default="digits", help="model to call")
    p.add_argument("--users", type=int, default=16, help="concurrent locust users")
    p.add_argument("--spawn-rate", type=float, default=8, help="users started per second")
    p.add_argument("--run-time", default="30s", help="how long (locust syntax: 30s, 2m)")
    p.add_argument("--mix", default=DEFAULT_MIX, help="task weights (see loadtests/locustfile.py)")
    p.add_argument("--results", type=Path, default=procs.ROOT / "loadtests" / "results")
    p.add_argument("--max-failure-ratio", type=float, default=0.01)
    args = p.parse_args(argv)
    seconds(args.run_time)  # refuse a bad duration or mix before starting anything
    try:
        parse_mix(args.mix)
    except ValueError as err:
        p.error(str(err))
    sys.exit(run(args))


if __name__ == "__main__":
    main()
