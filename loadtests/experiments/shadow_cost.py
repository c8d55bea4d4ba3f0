"""What a shadow candidate costs the request path: p50/p99 with and without one, same run.

    python -m loadtests.experiments.shadow_cost --model digits --point grpc:1 --point grpc:8 \\
        --point rest-v2:1 --reps 4

Two servers are up at once, on the same model: ``plain`` serves version 1 alone, ``shadow``
serves it with a copy as version 2 under ``policy: shadow`` (rollout.yaml), so every request
it answers is run again by the candidate after the answer. For every repetition and point each
server gets one window in turn (the order reversed on odd repetitions), and the medians are
compared: the answer's latency should not include the candidate's, but the candidate's work
takes the same cores. Written as JSON to ``OUT/<stamp>-shadow-<model>/shadow.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from loadtests import procs
from loadtests.bench import ensure_model, model_arguments, single_model_repo, window
from loadtests.experiments.ab import parse_point
from loadtests.payloads import make_payloads, read_input_shape


def shadow_repo(plain: Path, model: str, target: Path) -> Path:
    """``plain``'s version 1 twice (1 and 2) with rollout.yaml: shadow 2 behind 1."""
    version = next(p for p in (plain / model).iterdir() if p.name.isdigit())
    meta = json.loads((version / "metadata.json").read_text())
    for number in (1, 2):
        dest = target / model / str(number)
        if not dest.exists():
            shutil.copytree(version, dest)
            (dest / "metadata.json").write_text(json.dumps({**meta, "version": number}))
    (target / model / "rollout.yaml").write_text("policy: shadow\ncurrent: 1\ncandidate: 2\n")
    return target


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    model_arguments(p)
    p.add_argument("--point", type=parse_point, action="append", help="TARGET:CONCURRENCY")
    p.add_argument("--reps", type=int, default=4, help="windows per server and point")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per window")
    p.add_argument("--out", type=Path, default=procs.ROOT / "loadtests" / "results")
    args = p.parse_args(argv)
    points = args.point or [("grpc", 1), ("grpc", 8), ("rest-v2", 1), ("rest-v2", 8)]
    args.client_procs, args.grpc_channels = 1, 1

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"{stamp}-shadow-{args.model}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _, source = ensure_model(args.models, args.model, run_dir)
    plain, version_dir = single_model_repo(source, run_dir / "plain")
    # the plain repository holds the version under its own number; the shadow one as 1 and 2
    repos = {"plain": plain, "shadow": shadow_repo(plain, args.model, run_dir / "shadow")}
    payloads = make_payloads(read_input_shape(plain, args.model), run_dir / "payloads", count=32)
    windows: dict[tuple[str, str, int], list[dict]] = {}
    with ExitStack() as stack:
        servers = {}
        for name, repo in repos.items():
            server = procs.start_visor(repo, args.model, run_dir / f"{name}.log")
            server.name = name
            servers[name] = stack.enter_context(server)
        for rep in range(args.reps):
            order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
            for target, conc in points:
                for name in order:
                    w = window(args, servers[name], target, conc, args.model, payloads)
                    windows.setdefault((name, target, conc), []).append(w)
        url = f"http://{procs.LOOPBACK}:{servers['shadow'].http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            shadowed = resp.read().decode()
    rows = []
    for (name, target, conc), ws in windows.items():
        rows.append({
            "server": name, "target": target, "concurrency": conc,
            **{k: statistics.median(w[k] for w in ws)
               for k in ("rps", "p50_ms", "p99_ms", "server_cpu_cores")},
            "p50_windows": [round(w["p50_ms"], 3) for w in ws],
        })  # fmt: skip
    compared = [
        line for line in shadowed.splitlines() if line.startswith("visor_rollout_shadow_total")
    ]
    report = {
        "command": "python -m loadtests.experiments.shadow_cost "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "source": str(version_dir),
        "results": rows,
        "shadow_counters": compared,
    }
    (run_dir / "shadow.json").write_text(json.dumps(report, indent=2))
    print(f"shadow_cost: medians over {args.reps} windows each ({run_dir / 'shadow.json'})")
    for target, conc in points:
        by = {r["server"]: r for r in rows if (r["target"], r["concurrency"]) == (target, conc)}
        a, b = by["plain"], by["shadow"]
        print(
            f"  {target}:{conc:<3d} p50 {a['p50_ms']:.2f} -> {b['p50_ms']:.2f} ms "
            f"({b['p50_ms'] / a['p50_ms']:.2f}x)  p99 {a['p99_ms']:.2f} -> {b['p99_ms']:.2f} ms "
            f"({b['p99_ms'] / a['p99_ms']:.2f}x)  req/s {a['rps']:.0f} -> {b['rps']:.0f}"
        )
    for line in compared:
        print("  " + line)
    return report


if __name__ == "__main__":
    main()
