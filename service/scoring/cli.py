"""``python -m service score``: its flags, and one run from flags to summary."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from service.errors import VisorError
from service.types import InferOptions

PROG = "python -m service score"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _output(text: str) -> Path:
    if Path(text).suffix.lower() not in (".parquet", ".csv", ".jsonl"):
        raise argparse.ArgumentTypeError(f"{text}: use a .parquet, .csv or .jsonl name")
    return Path(text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_score_parser(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score images in bulk, locally or on Spark",
        description="Score a folder, glob or Parquet table of images with the server's "
        "preprocessing, model (ONNX Runtime) and thresholds; resumable.",
    )
    p.add_argument("--model", type=Path, required=True, help="models/NAME or models/NAME/VERSION")
    p.add_argument(
        "--input",
        required=True,
        help="a folder, a glob, an image, or a .parquet "
        "table with 'path' (and optional binary 'content') columns",
    )
    p.add_argument(
        "--output",
        type=_output,
        required=True,
        help="out.parquet (a folder of parts), out.csv or out.jsonl",
    )
    p.add_argument("--engine", choices=("local", "spark"), default="local")
    p.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    p.add_argument("--driver-memory", default="1g", help="Spark driver memory (default 1g)")
    p.add_argument("--batch-size", type=_positive, default=64, help="images per batch")
    p.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="local: decoding threads and ONNX Runtime intra-op threads (default: every core)",
    )
    p.add_argument(
        "--part-rows",
        type=_positive,
        default=10_000,
        help="rows per Parquet part (local) or per task (Spark): the most a failure redoes",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--threshold", type=_number, help="one threshold for every class")
    target.add_argument("--target-precision", type=_number, help="re-target the thresholds")
    target.add_argument("--target-recall", type=_number, help="re-target the thresholds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_score(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.engine == "spark" and args.output.suffix.lower() != ".parquet":
        return _fail(f"--engine spark writes Parquet: give a .parquet --output, not {args.output}")
    from service.scoring.model import ScoringError  # `serve` never loads scoring code

    try:
        return _run(args)
    except (ScoringError, VisorError) as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    from service.scoring.inputs import open_source
    from service.scoring.local import cores, score_local
    from service.scoring.model import Scorer, load_checked, scoring_settings, version_dir
    from service.scoring.output import open_output
    from service.scoring.summary import summary_lines

    folder = version_dir(args.model)
    meta = load_checked(folder)
    onnx_path = folder / meta.artifacts["onnx"].path
    settings = scoring_settings(args.threads or cores())
    scorer = Scorer(onnx_path, meta, settings, _options_of(args))  # Checks the options
    source = open_source(args.input)  # Before the output exists, so a typo creates nothing
    output = open_output(args.output, args.part_rows)
    done = output.done()
    started = time.monotonic()
    print(
        f"{meta.name} v{meta.version} on {args.engine}: {len(done)} already in {args.output}",
        file=sys.stderr,
    )
    if args.engine == "local":
        progress = not args.no_progress
        scored = score_local(scorer, source, output, done, args.batch_size, progress, args.threads)
    else:
        scored = _spark(args, scorer, onnx_path, source, done)
    scorer.close()
    seconds = time.monotonic() - started
    for line in summary_lines(output.read(), meta.labels, scored, seconds, str(args.output)):
        print(line)
    return 0


def _spark(args: argparse.Namespace, scorer: Any, onnx_path: Path, source: Any, done: set) -> int:
    from service.scoring.inputs import count
    from service.scoring.spark import score_spark
    from service.scoring.spark_worker import ScoringJob

    if source.paths is not None and not set(source.paths) - done:
        return 0  # Nothing left: no need to start Spark
    if source.paths is None and count(source) == 0:
        return 0
    job = ScoringJob(
        metadata_json=scorer.meta.model_dump_json(),
        onnx_name=onnx_path.name,
        options=_options_of(args),
        batch_size=args.batch_size,
    )
    return score_spark(
        job,
        onnx_path,
        source,
        args.output,
        done,
        args.master,
        args.driver_memory,
        progress=not args.no_progress,
        part_rows=args.part_rows,
    )


def _options_of(args: argparse.Namespace) -> InferOptions:
    return InferOptions(
        threshold=args.threshold,
        target_precision=args.target_precision,
        target_recall=args.target_recall,
    )
