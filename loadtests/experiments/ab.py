"""A/B a server setting: every variant up at once, measured in alternating short windows.

    python -m loadtests.experiments.ab --model mobilenetv2 \\
        --variant base: --variant spin:VISOR_ORT_ALLOW_SPINNING=true \\
        --point grpc:1 --point grpc:32 --reps 4

On a machine whose cores are shared, the load from other work moves more from one minute to the
next than most settings do, so two servers measured one after the other compare two moments, not
two settings. Here each variant is its own ``python -m service serve`` (same model, same
payloads), all started before the first window; then, for every repetition and point, each
variant gets one window in turn (the order reversed on odd repetitions). Each variant's figure
is the median over repetitions, printed with every window's value so the spread is visible, and
written as JSON to ``OUT/<stamp>-ab-<model>.json``.

Each window also reports the event loop's CPU time per request (the main threads of the
server's processes, read from ``/proc``). On shared cores it moves less than requests/s, so it
is the figure to read when two versions of the request path are compared: give the old one its
own checkout with ``--tree``::

    git worktree add /tmp/visor-old HEAD~1
    python -m loadtests.experiments.ab --model digits --variant old: --variant new: \\
        --tree old=/tmp/visor-old --point grpc:64 --reps 8

Each window also reports the whole machine's idle and stolen cores: a saturated server should
leave no core idle, and steal is the neighbours' share when the hypervisor reports it.

An idle server costs nothing measurable (0.004 cores for MobileNetV2), so the servers not under
load do not disturb the one that is. A tool for deciding defaults, not a benchmark: the figures
it prints are not ratios to the machine's limit (``loadtests.bench`` measures those).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from loadtests import procs
from loadtests.bench import ensure_model, model_arguments, single_model_repo, window
from loadtests.client import TARGETS
from loadtests.payloads import make_payloads, read_input_shape


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:KEY=VALUE,KEY=VALUE`` (``name:`` alone: the defaults)."""
    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"variant {text!r}: write NAME:KEY=VALUE,... or NAME:")
    env: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise argparse.ArgumentTypeError(f"variant {name!r}: {item!r} is not KEY=VALUE")
        env[key] = value
    return name, env


def parse_tree(text: str) -> tuple[str, Path]:
    """``name=PATH``: a checkout holding a ``service`` package."""
    name, sep, path = text.partition("=")
    root = Path(path).expanduser().resolve()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"tree {text!r}: write NAME=PATH")
    if not (root / "service" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"tree {text!r}: {root} has no service/__main__.py (give a Visor checkout, e.g. "
            "one made by `git worktree add /tmp/visor-old HEAD~1`)"
        )
    return name, root


def parse_point(text: str) -> tuple[str, int]:
    """``target:concurrency``, e.g. ``grpc:32``."""
    target, _, conc = text.partition(":")
    if target not in TARGETS or not conc.isdigit() or int(conc) < 1:
        raise argparse.ArgumentTypeError(
            f"point {text!r}: write TARGET:CONCURRENCY with TARGET one of {', '.join(TARGETS)}"
        )
    return target, int(conc)


def summarise(windows: list[dict]) -> dict:
    def med(key: str) -> float:
        return statistics.median(w[key] for w in windows)

    return {
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "server_cpu_cores": med("server_cpu_cores"),
        "loop_ms_per_request": med("loop_ms_per_request"),
        "machine_idle_cores": med("machine_idle_cores"),
        "machine_steal_cores": med("machine_steal_cores"),
        "rps_windows": [round(w["rps"], 1) for w in windows],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    model_arguments(p)
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        required=True,
        help="NAME:KEY=VALUE,... server environment of one variant (repeat; two or more)",
    )
    p.add_argument(
        "--point", type=parse_point, action="append", required=True, help="TARGET:CONCURRENCY"
    )
    p.add_argument(
        "--tree",
        type=parse_tree,
        action="append",
        default=[],
        help="NAME=PATH: run variant NAME's server from another checkout, e.g. a `git worktree`\n"
        "of the commit to compare against (default: this one)",
    )
    p.add_argument("--reps", type=int, default=4, help="windows per variant and point")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per window")
    p.add_argument("--grpc-channels", type=int, default=1, help="gRPC connections per client")
    p.add_argument("--out", type=Path, default=procs.ROOT / "loadtests" / "results")
    args = p.parse_args(argv)
    names = [name for name, _ in args.variant]
    if len(names) < 2 or len(set(names)) != len(names):
        p.error("give two or more --variant, each with its own name")
    trees = dict(args.tree)
    if unknown := sorted(set(trees) - set(names)):
        p.error(f"--tree names no variant: {', '.join(unknown)}")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"{stamp}-ab-{args.model}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _, source = ensure_model(args.models, args.model, run_dir)
    repo, _ = single_model_repo(source, run_dir / "models")
    payloads = make_payloads(read_input_shape(repo, args.model), run_dir / "payloads", count=32)

    args.client_procs = 1
    windows: dict[tuple[str, str, int], list[dict]] = {}
    with ExitStack() as stack:
        servers = {}
        for name, env in args.variant:
            tree = trees.get(name, procs.ROOT)
            log = run_dir / f"{name}.log"
            server = procs.start_visor(repo, args.model, log, env=env, tree=tree)
            server.name = name  # NOTE: the name each window's line is printed with
            servers[name] = stack.enter_context(server)
            where = f" from {tree}" if name in trees else ""
            print(f"ab: {name} ready in {server.cold_start_s:.1f} s {env or '(defaults)'}{where}")
        for rep in range(args.reps):
            order = names if rep % 2 == 0 else names[::-1]
            for target, conc in args.point:
                for name in order:
                    w = window(args, servers[name], target, conc, args.model, payloads)
                    w["loop_ms_per_request"] = 1000 * w["loop_cores"] / w["rps"]
                    windows.setdefault((name, target, conc), []).append(w)
    report = {
        "command": "python -m loadtests.experiments.ab "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "variants": {name: env for name, env in args.variant},
        "trees": {name: str(path) for name, path in trees.items()},
        "results": [
            {"variant": n, "target": t, "concurrency": c, **summarise(w)}
            for (n, t, c), w in windows.items()
        ],
    }
    (run_dir / "ab.json").write_text(json.dumps(report, indent=2))
    print(f"ab: medians over {args.reps} windows each ({run_dir / 'ab.json'})")
    for target, conc in args.point:
        for r in report["results"]:
            if (r["target"], r["concurrency"]) == (target, conc):
                print(
                    f"  {target}:{conc:<4d} {r['variant']:>12s} {r['rps']:8.1f} req/s"
                    f"  p50 {r['p50_ms']:7.2f} ms  server {r['server_cpu_cores']:.2f} cores"
                    f"  loop {r['loop_ms_per_request']:.3f} ms/req  idle {r['machine_idle_cores']:.2f}"
                    f"  windows {r['rps_windows']}"
                )
    return report


if __name__ == "__main__":
    main()
