"""Where a request's time goes: py-spy on the running server while the load client drives it.

Run by ``bench.py --profile`` after the measured points (the sampler perturbs throughput, so no
reported throughput figure is taken under it). Samples every thread of the server's process tree
(``--subprocesses``, non-blocking) that holds the GIL (``--gil``): on a Python server the GIL is
the serial resource a per-request path competes for, and the filter drops threads parked in a
queue or in epoll, which py-spy's non-blocking mode cannot tell from running ones. Native work
that releases the GIL (ONNX Runtime's kernels, gRPC's C core) is therefore not in these samples;
the per-point server CPU in bench.json covers it. Each sample is sorted by the frame it was
executing: Visor's own code, image decoding, gRPC, HTTP framework, asyncio, metrics...
The raw collapsed stacks are kept beside bench.json for flame graphs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from loadtests import procs

# (category, substrings of a frame's "function (file:line)"), first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("model compute (onnxruntime session.run)", ("(onnxruntime/",)),
    ("image decode/resize (Pillow)", ("(PIL/", "(training/imaging")),
    ("Visor service code", ("(service/",)),
    ("protobuf", ("google/protobuf", "_pb2")),
    ("gRPC runtime (grpc.aio)", ("grpc/",)),
    (
        "HTTP framework (BentoML/Starlette/uvicorn)",
        ("bentoml", "starlette", "uvicorn", "anyio", "h11", "httptools", "multipart", "fastapi"),
    ),
    ("prometheus metrics", ("prometheus_client",)),
    ("pydantic", ("pydantic",)),
    ("logging", ("logging/",)),
    ("numpy", ("numpy",)),
    ("thread pool / futures", ("concurrent/futures", "threading.py", "queue.py")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
]
# NOTE: py-spy runs with --full-filenames (so Visor's files are told apart from libraries');
# frames are shortened to paths relative to site-packages, the stdlib or the repository.
_PREFIX = re.compile(
    r"\((?:[^()]*?/site-packages/|[^()]*?/lib/python3\.\d+/|" + re.escape(str(procs.ROOT)) + r"/)"
)


def parse_collapsed(path: Path) -> Counter:
    """py-spy ``--format raw`` → Counter of stack tuples (root first, process prefix dropped)."""
    stacks: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = [
            _PREFIX.sub("(", f)
            for f in head.split(";")
            if not f.startswith(("process ", "thread "))
        ]
        stacks[tuple(frames)] += int(count)
    return stacks


def categorise(frame: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in frame for n in needles):
            return name
    return "other Python"


def summarise(stacks: Counter, top: int = 12) -> dict:
    """Self time by category and by function; inclusive time of Visor's own functions."""
    total = sum(stacks.values()) or 1
    by_category: Counter = Counter()
    by_self: Counter = Counter()
    inclusive: Counter = Counter()
    for frames, n in stacks.items():
        if not frames:
            continue
        by_category[categorise(frames[-1])] += n
        by_self[frames[-1]] += n
        for f in {f for f in frames if "(service/" in f}:
            inclusive[_function(f)] += n
    pct = lambda c: [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(top)]
    return {
        "samples": total,
        "self_by_category_pct": pct(by_category),
        "self_by_function_pct": pct(by_self),
        "visor_inclusive_pct": pct(inclusive),
    }


def _function(frame: str) -> str:
    # "Engine.classify_array (service/engine.py:123)" -> "Engine.classify_array (service/engine.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def profile_points(
    args,
    server: procs.Server,
    targets: list[tuple[str, int]],
    model: str,
    payloads: Path,
    run_dir: Path,
) -> dict:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    out: dict = {}
    seconds = args.duration
    for target, port in targets:
        raw = run_dir / f"profile-{target}.txt"
        sampler = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(server.popen.pid),
                "--subprocesses",
                "--nonblocking",
                "--gil",
                "--full-filenames",
                "--rate",
                "200",
                "--format",
                "raw",
                "--duration",
                str(int(seconds + args.warmup)),
                "-o",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        client = subprocess.run(
            procs.client_argv(
                target,
                port,
                model,
                payloads,
                args.profile_concurrency,
                seconds,
                warmup=args.warmup,
                channels=args.grpc_channels,
            ),
            check=False,
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            timeout=60 + 3 * seconds,
        )
        try:
            _, err = sampler.communicate(timeout=30 + 2 * seconds)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _, err = sampler.communicate()
        if not raw.exists():
            out[target] = {"error": f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"}
            continue
        summary = summarise(parse_collapsed(raw))
        summary["concurrency"] = args.profile_concurrency
        summary["raw_stacks"] = raw.name
        if client.returncode == 0:
            import json

            summary["rps_under_profiler"] = json.loads(client.stdout.strip().splitlines()[-1])[
                "rps"
            ]
        out[target] = summary
        print(
            f"  profiled {target} at c={args.profile_concurrency}: {summary['samples']} samples; "
            + ", ".join(f"{k} {v}%" for k, v in summary["self_by_category_pct"][:4]),
            flush=True,
        )
    return out
