"""Images/s of offline scoring, locally and on Spark, against the HTTP server, on the same images.

    python -m loadtests.experiments.score_bench --models models --model digits \\
        --images build/data/digits
    python -m loadtests.experiments.score_bench --models build/bench-models --model mobilenetv2 \\
        --generate photos --count 20000 --engines local,spark --rounds 2

``--generate digits`` writes scikit-learn's digits as PNGs (copies after the first 1,797 shifted by
a pixel and noised, so no two files are the same), ``--generate photos`` 224x224 JPEG crops of
scikit-learn's two sample photographs; both are kept under ``build/score-bench/`` for the next run.
With ``--rounds`` the engines take turns (local, Spark, local, ...) and the medians are reported,
with Spark's images/s as a fraction of the local engine's.

- ``local``: ``python -m service score --engine local`` (every core: decode threads + ORT).
- ``spark``: ``python -m service score --engine spark --master local[2]``.
- ``http``: ``python -m service serve`` (HTTP only), then ``--concurrency`` clients POST
  ``/classify`` multipart batches of ``--batch`` images until every image was classified once.

Each scorer is timed twice: the whole process (start-up included: Python imports, and for Spark
the JVM and its executors) and the scoring itself: for the local engine the command's summary, for
Spark its scoring job alone (the engine's ``spark: scoring job ran`` line; the session, the warm-up
job that loads the model in every Python worker, and the session's stop are start-up). The
server's start is not counted: a server is started once and then serves. Results go to
``loadtests/results/score_bench.json`` and to the table in ``docs/scoring.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
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
from loadtests.payloads import photo_crops

ROOT = procs.ROOT
SCORED = re.compile(r"scored (\d+) image\(s\) in ([\d.]+) s")
SPARK_JOB = re.compile(r"spark: scoring job ran ([\d.]+) s")
SUFFIXES = (".png", ".jpg")


def images_of(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES)
    return paths[:limit] if limit else paths


def write_digits(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` 8x8 digit PNGs, ``folder/<digit>/<n>.png``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    base = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.int16)
    rng = np.random.default_rng(seed)
    for n in range(count):
        image = base[n % len(base)]
        if n >= len(base):
            image = np.roll(image, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            image = image + rng.integers(-16, 17, image.shape)
        path = folder / str(digits.target[n % len(base)]) / f"{n:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.clip(0, 255).astype(np.uint8), mode="L").save(path)


def write_photos(folder: Path, count: int, size: int = 224, seed: int = 0) -> None:
    """``count`` ``size``x``size`` JPEG crops of the two sample photographs."""
    for n, crop in enumerate(photo_crops(count, (size, size), seed)):
        path = folder / ("china", "flower")[n % 2] / f"{n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=90)


def generated(kind: str, count: int) -> Path:
    """The generated data set, written once and reused (a marker file says it is complete)."""
    folder = ROOT / "build" / "score-bench" / f"{kind}-{count}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        (write_digits if kind == "digits" else write_photos)(folder, count)
        (folder / ".complete").touch()
    return folder


def run_scorer(engine: str, args: argparse.Namespace, image_dir: Path, out: Path) -> dict:
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
    job = SPARK_JOB.search(done.stderr)
    # NOTE: the command's own figure includes starting and stopping Spark: start-up, not scoring
    seconds = float(job.group(1)) if job else seconds
    return {
        "command": " ".join(argv[1:]).replace(str(out.parent), "$WORK"),
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


def same_rows(a: Path, b: Path) -> bool:
    """Whether two Parquet outputs hold the same rows, probabilities bit for bit."""
    frames = [pd.read_parquet(p).sort_values("path").reset_index(drop=True) for p in (a, b)]
    for frame in frames:
        for column in ("labels", "probabilities"):
            frame[column] = frame[column].map(list)
    return frames[0].equals(frames[1])


def median_of(rounds: list[dict]) -> dict:
    """The round with the median scoring images/s (with every round's figure kept)."""
    ranked = sorted(rounds, key=lambda r: r["images_per_s_scoring"] or 0.0)
    pick = dict(ranked[(len(ranked) - 1) // 2])
    pick["rounds_images_per_s_scoring"] = [r["images_per_s_scoring"] for r in rounds]
    return pick


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
        rounds = r.get("rounds_images_per_s_scoring", [])
        each = f" (rounds: {', '.join(map(str, rounds))})" if len(rounds) > 1 else ""
        lines.append(
            f"| {engine} | {r['images']} | {r['startup_s']} | {r['scoring_s']} "
            f"| {r['images_per_s_scoring']}{each} | {whole} | {diff} |"
        )
    if "spark_vs_local" in result:
        lines.append(
            f"\nSpark / local images/s (scoring): {result['spark_vs_local']}; "
            f"Spark's rows equal the local engine's bit for bit: {result['spark_rows_equal_local']}"
        )
    return "\n".join(lines)


def write_doc(doc: Path, result: dict, block: str) -> None:
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    text = doc.read_text() if doc.exists() else f"{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    m = result["machine"]
    body = (
        f"{start}\n`{result['command']}` on {m['cpu']} ({m['usable_cores']} usable cores, "
        f"load average {m['load_avg_at_start'][0]:.1f} at start), model {result['model']}:\n\n"
        f"{table(result)}\n{end}"
    )
    doc.write_text(head + body + tail)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.experiments.score_bench", description=__doc__
    )
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--model", default="digits")
    images = p.add_mutually_exclusive_group(required=True)
    images.add_argument("--images", type=Path, help="a folder of PNG / JPEG images")
    images.add_argument("--generate", choices=("digits", "photos"), help="generate the images")
    p.add_argument("--count", type=int, default=20_000, help="images to generate")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "--copies", type=int, default=1, help="score each image this many times (as new files)"
    )
    p.add_argument("--batch", type=int, default=32, help="images per batch / request")
    p.add_argument("--concurrency", type=int, default=2, help="HTTP clients")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--engines", default="local,spark,http")
    p.add_argument("--rounds", type=int, default=1, help="runs of each engine, taking turns")
    p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "score_bench.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "scoring.md")
    p.add_argument("--block", default="score-bench", help="the doc's <!-- BLOCK:start --> table")
    return p.parse_args(argv)


def input_folder(args: argparse.Namespace, work: Path) -> tuple[Path, list[Path]]:
    """The folder to score and its images: the generated set as is, else fresh copies."""
    if args.generate:
        folder = generated(args.generate, args.count)
        return folder, images_of(folder, args.limit)
    image_dir = work / "images"
    paths = []
    for i, src in enumerate(images_of(args.images, args.limit) * args.copies):
        dst = image_dir / src.parent.name / f"{i:06d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        paths.append(dst)
    return image_dir, paths


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
        image_dir, paths = input_folder(args, work)
        served = run_http(args, paths, work) if "http" in engines else None
        scorers = [e for e in ("local", "spark") if e in engines]
        rounds: dict[str, list[dict]] = {e: [] for e in scorers}
        for n in range(args.rounds):
            for engine in scorers:
                out = work / f"{engine}-{n}.parquet"
                r = run_scorer(engine, args, image_dir, out)
                if served:
                    r["max_abs_diff_vs_http"] = max_diff(out, served["probabilities"])
                rounds[engine].append(r)
        for engine in scorers:
            result["engines"][engine] = {
                k: v for k, v in median_of(rounds[engine]).items() if k != "output"
            }
        if len(scorers) == 2:
            local, spark = (result["engines"][e]["images_per_s_scoring"] for e in scorers)
            result["spark_vs_local"] = round(spark / local, 2)
            result["spark_rows_equal_local"] = same_rows(
                rounds["local"][0]["output"], rounds["spark"][0]["output"]
            )
        if served:
            result["engines"]["http"] = {k: v for k, v in served.items() if k != "probabilities"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(args.doc, result, args.block)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
