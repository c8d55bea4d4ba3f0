"""Memory at rest, process by process: Visor's variants and the peers, side by side.

    python -m loadtests.memory --model digits                       # defaults, KServe, PyTriton
    python -m loadtests.memory --model digits --variant w1:VISOR_WORKERS=1 --peers kserve

Every server is started on loopback with the same model (variants as in
``loadtests.experiments.ab``: ``NAME:KEY=VALUE,...``), left idle for ``--rest`` seconds, and each
process of its tree measured: RSS (what ``ps`` shows; pages shared between processes count in
each), PSS (shared pages split between the processes that map them: the sum is what the tree
costs the machine) and USS (pages of that process alone). With ``--load TARGET:CONC`` every
server then gets ``--seconds`` of that load and is measured again at rest after it (arenas and
caches grown under load stay). Writes ``OUT/<stamp>-memory-<model>/memory.json`` and prints a
table. Figures vary with the machine; compare servers of one run only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from loadtests import peers, procs
from loadtests.bench import ensure_model, model_arguments, single_model_repo, window
from loadtests.experiments.ab import parse_point, parse_tree, parse_variant
from loadtests.payloads import make_payloads, read_input_shape


def measure(server: procs.Server) -> dict:
    """The tree's totals and each process's figures, now."""
    return {"total": server.memory_mb(), "processes": server.memory_by_process()}


def print_table(name: str, phase: str, figures: dict) -> None:
    total = figures["total"]
    print(
        f"{name:>10s} {phase:<10s} RSS {total['rss_mb']:6.0f}  PSS {total['pss_mb']:6.0f}"
        f"  USS {total['uss_mb']:6.0f} MB  ({len(figures['processes'])} processes)"
    )
    for proc in figures["processes"]:
        print(
            f"{'':>21s}{proc['rss_mb']:6.0f}      {proc['pss_mb']:6.0f}      {proc['uss_mb']:6.0f}"
            f"     {proc['threads']:3d} threads  {proc['cmd'][:60]}"
        )


def start(
    name: str, env: dict | None, repo: Path, version: Path, model: str, log: Path, tree: Path
) -> procs.Server:
    if name in peers.PEERS and env is None:
        return peers.start_peer(name, version, model, log)
    return procs.start_visor(repo, model, log, env=env or {}, tree=tree)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    model_arguments(p)
    p.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        help="NAME:KEY=VALUE,... a Visor server's environment (repeat; default: visor:)",
    )
    p.add_argument(
        "--tree",
        type=parse_tree,
        action="append",
        default=[],
        help="NAME=PATH: run variant NAME from another checkout (e.g. a `git worktree`)",
    )
    p.add_argument("--peers", default="kserve,pytriton", help="installed peers to measure too")
    p.add_argument("--rest", type=float, default=3.0, help="idle seconds before measuring")
    p.add_argument("--load", type=parse_point, help="TARGET:CONC load, then measure at rest again")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of --load per server")
    p.add_argument("--out", type=Path, default=procs.ROOT / "loadtests" / "results")
    args = p.parse_args(argv)
    variants = dict(args.variant or [("visor", {})])
    trees = dict(args.tree)
    wanted = [n for n in args.peers.split(",") if n]
    skipped = {n: why for n in wanted if (why := peers.missing(n))}

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.out / f"{stamp}-memory-{args.model}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _, source = ensure_model(args.models, args.model, run_dir)
    repo, version = single_model_repo(source, run_dir / "models")
    servers: dict[str, dict] = {name: {"skipped": why} for name, why in skipped.items()}
    with ExitStack() as stack:
        up = {}
        for name, env in [*variants.items(), *((n, None) for n in wanted if n not in skipped)]:
            log = run_dir / f"{name}.log"
            tree = trees.get(name, procs.ROOT)
            server = start(name, env, repo, version, args.model, log, tree)
            server.name = name
            up[name] = stack.enter_context(server)
            servers[name] = {"env": env, "cold_start_s": server.cold_start_s}
            if name in trees:
                servers[name]["tree"] = str(trees[name])
        time.sleep(args.rest)
        for name, server in up.items():
            servers[name]["at_rest"] = measure(server)
            print_table(name, "at rest", servers[name]["at_rest"])
        if args.load:
            target, conc = args.load
            shape = read_input_shape(repo, args.model)
            payloads = make_payloads(shape, run_dir / "payloads", count=32)
            args.duration, args.warmup, args.client_procs, args.grpc_channels = (
                args.seconds,
                1.0,
                1,
                1,
            )
            for name, server in up.items():
                point = window(args, server, target, conc, args.model, payloads)
                servers[name]["load"] = {"target": target, "concurrency": conc, **point}
            time.sleep(args.rest)
            for name, server in up.items():
                servers[name]["after_load"] = measure(server)
                print_table(name, "after load", servers[name]["after_load"])
    report = {
        "command": "python -m loadtests.memory " + " ".join(argv or sys.argv[1:]),
        "model": args.model,
        "rest_s": args.rest,
        "servers": servers,
    }
    (run_dir / "memory.json").write_text(json.dumps(report, indent=2))
    print(f"memory: {run_dir / 'memory.json'}")
    return report


if __name__ == "__main__":
    main()
