"""Images/s of offline scoring, locally and on Spark, against the HTTP server, on the same images.

    python -m loadtests.experiments.score_bench --models models --model digits \\
        --images build/data/digits

- ``local``: ``python -m service score --engine local`` (every core: decode threads + ORT).
- ``spark``: ``python -m service score --engine spark --master local[2]``.
- ``http``: ``python -m service serve`` (HTTP only), then ``--concurrency`` clients POST
  ``/classify`` multipart batches of ``--batch`` images until every image was classified once.

Each scorer is timed twice: the whole process (start-up included: Python imports, and for Spark
the JVM and its executors) and the scoring itself as the command's summary reports it. The
server's start is not counted: a server is started once and then serves. Results go to
``loadtests/results/score_bench.json`` and to the table in ``docs/scoring.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from loadtests import procs
from loadtests.bench import machine

ROOT = procs.ROOT
SCORED = re.compile(r"scored (\d+) image\(s\) in ([\d.]+) s")
SESSION = re.compile(r"spark: session on \S+ up in ([\d.]+) s")
START, END = "<!-- score-bench:start -->", "<!-- score-bench:end -->"


def images_of(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*.png"))
    return paths[:limit] if limit else paths


def run_scorer(engine: str, args: argparse.Namespace, image_dir: Path, work: Path) -> dict:
    out = work / f"{engine}.parquet"
    argv = [sys.executable, "-m", "service", "score", "--model", str(args.models / args.model)]
    argv += ["--input", str(image_dir), "--output", str(out), "--engine", engine]
    argv += ["--batch-size", str(args.batch), "--master", args.master, "--no-progress"]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"score_bench: {engine} failed:\n{done.stderr[-3000:]}")
    match = SCORED.search(done.stdout)
    assert match, done.stdout
    images, seconds = int(match.group(1)), float(match.group(2))
    session = SESSION.search(done.stderr)
    # NOTE: the command's own figure includes starting Spark; that is start-up, not scoring
    seconds -= float(session.group(1)) if session else 0.0
    return {
        "command": " ".join(argv[1:]).replace(str(work), "$WORK"),
        "images": images,
        "startup_s": round(wall - seconds, 2),
        "scoring_s": round(seconds, 2),
        "images_per_s_scoring": round(images / seconds, 1) if seconds > 0 else None,
        "process_s": round(wall, 2),
        "images_per_s_process": round(images / wall, 1),
        "output": out,
    }


def run_http(args: argparse.Namespace, paths: list[Path], work: Path) -> dict:
    server = procs.start_visor(args.models, args.model, work / "server.log", protocol="http")
    url = f"http://{procs.LOOPBACK}:{server.http_port}/classify"
    batches = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]
    bodies = [[(p, p.read_bytes()) for p in batch] for batch in batches]

    def post(client: httpx.Client, batch: list[tuple[Path, bytes]]) -> list[dict]:
        files = [("image", (p.name, data, "image/png")) for p, data in batch]
        reply = client.post(url, files=files, data={"model": args.model})
        reply.raise_for_status()
        return reply.json()["predictions"]

    try:
        with httpx.Client(timeout=120) as client, ThreadPoolExecutor(args.concurrency) as pool:
            post(client, bodies[0][:1])  # NOTE: one warm request; the server already warmed up
            started = time.monotonic()
            answers = list(pool.map(lambda b: post(client, b), bodies))
            seconds = time.monotonic() - started
    finally:
        server.stop()
    predictions = [pred for answer in answers for pred in answer]
    return {
        "command": f"python -m service serve (HTTP); {args.concurrency} clients, /classify "
        f"multipart batches of {args.batch}",
        "images": len(paths),
        "startup_s": round(server.cold_start_s or 0.0, 2),
        "scoring_s": round(seconds, 2),
        "images_per_s_scoring": round(len(paths) / seconds, 1),
        "probabilities": {str(p): pred["probabilities"] for p, pred in zip(paths, predictions)},
    }


def max_diff(output: Path, served: dict[str, dict[str, float]]) -> float:
    """Largest |p_scored - p_served| over every image and label."""
    rows = pd.read_parquet(output).set_index("path")
    labels = None
    worst = 0.0
    for path, probs in served.items():
        labels = labels or list(probs)
        got = np.asarray(rows.loc[path, "probabilities"], np.float64)
        worst = max(worst, float(np.abs(got - [probs[lab] for lab in labels]).max()))
    return worst


def table(result: dict) -> str:
    lines = [
        "| engine | images | start-up s | scoring s | images/s scoring "
        + "| images/s whole command | max abs diff vs HTTP |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine, r in result["engines"].items():
        whole = r.get("images_per_s_process", "n/a (a server runs on)")
        diff = r.get("max_abs_diff_vs_http")
        diff = f"{diff:.1e}" if isinstance(diff, float) else "-"
        lines.append(
            f"| {engine} | {r['images']} | {r['startup_s']} | {r['scoring_s']} "
            f"| {r['images_per_s_scoring']} | {whole} | {diff} |"
        )
    return "\n".join(lines)


def write_doc(doc: Path, result: dict) -> None:
    text = doc.read_text() if doc.exists() else f"{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    m = result["machine"]
    block = (
        f"{START}\n`{result['command']}` on {m['cpu']} ({m['usable_cores']} usable cores, "
        f"load average {m['load_avg_at_start'][0]:.1f} at start), model {result['model']}:\n\n"
        f"{table(result)}\n{END}"
    )
    doc.write_text(head + block + tail)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.experiments.score_bench", description=__doc__
    )
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--model", default="digits")
    p.add_argument("--images", type=Path, required=True, help="a folder of PNG images")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "--copies", type=int, default=1, help="score each image this many times (as new files)"
    )
    p.add_argument("--batch", type=int, default=32, help="images per batch / request")
    p.add_argument("--concurrency", type=int, default=2, help="HTTP clients")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--engines", default="local,spark,http")
    p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "score_bench.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "scoring.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.models = args.models.resolve()
    engines = args.engines.split(",")
    result: dict = {
        "command": "python -m loadtests.experiments.score_bench " + " ".join(argv or sys.argv[1:]),
        "model": args.model,
        "machine": machine(),
        "engines": {},
    }
    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        work = Path(tmp)
        image_dir = work / "images"
        paths = []
        sources = images_of(args.images, args.limit) * args.copies
        for i, src in enumerate(sources):
            dst = image_dir / src.parent.name / f"{i:06d}{src.suffix}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            paths.append(dst)
        served = run_http(args, paths, work) if "http" in engines else None
        for engine in ("local", "spark"):
            if engine in engines:
                r = run_scorer(engine, args, image_dir, work)
                if served:
                    r["max_abs_diff_vs_http"] = max_diff(r["output"], served["probabilities"])
                result["engines"][engine] = {k: v for k, v in r.items() if k != "output"}
        if served:
            result["engines"]["http"] = {k: v for k, v in served.items() if k != "probabilities"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(args.doc, result)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
