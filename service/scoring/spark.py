"""The Spark engine: the same scoring as a ``mapInArrow`` stage, writing Parquet parts.

The driver lists what is left to score (the output's paths are skipped), ships the ONNX file
with the job (``SparkContext.addFile``: every executor gets a local copy) and appends the rows
to the output folder; Spark's commit protocol publishes the parts only when the job succeeds.
Each executor's Python worker builds one ``Scorer`` and keeps it in a module global
(``spark_worker.py``), so a session is loaded once per process, not once per batch; a warm-up
job loads it in every task slot before the scoring job starts.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd

from service.scoring.inputs import Source, count
from service.scoring.output import SPARK_SCHEMA
from service.scoring.spark_worker import WORKER_SCHEMA, ScoringJob, load_scorer, score_batches

REPO_ROOT = Path(__file__).resolve().parents[2]
# Rows per Arrow batch between the JVM and a Python worker: big enough that the per-batch
# costs (a round trip, a schema check, an output batch) vanish next to decoding and inference.
ARROW_BATCH = 1024


def spark_session(master: str, driver_memory: str, progress: bool = True):
    """A small SparkSession: no UI, Arrow transfers of ``ARROW_BATCH`` rows."""
    # Local executors are Python processes the JVM starts; they import service.* from
    # here. On a cluster the executors need Visor installed (the same image or an env).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    if master.startswith("local"):
        # Else Spark starts the workers with the first `python3` on PATH, which may
        # lack this environment's packages; on a cluster set PYSPARK_PYTHON yourself.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # Loopback only, no warning
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if master.startswith("local"):
        # The driver is the executor here, and lives for one job: the C2 JIT compiler would
        # spend more CPU compiling Spark's code than that code runs, on cores the workers need
        builder = builder.config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
    spark = (
        builder.master(master)
        .appName("visor-score")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", str(progress).lower())
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH))
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def partitions(cores: int, rows: int, part_rows: int) -> int:
    """Tasks for ``rows`` images: at most ``part_rows`` each, in full waves of ``cores``."""
    return cores * max(1, math.ceil(rows / (cores * part_rows)))


def _todo_frame(spark, source: Source, done: set[str], part_rows: int):
    cores = spark.sparkContext.defaultParallelism
    if source.paths is not None:
        todo = [p for p in source.paths if p not in done]
        # From pandas through Arrow, in one slice per core: no Python worker runs for it
        frame = spark.createDataFrame(pd.DataFrame({"path": todo}), "path string")
        rows = len(todo)
    else:
        assert source.table is not None
        frame = spark.read.parquet(str(source.table))
        frame = frame.select("path", "content") if source.has_content else frame.select("path")
        if done:
            seen = spark.createDataFrame(pd.DataFrame({"path": sorted(done)}), "path string")
            frame = frame.join(seen, "path", "left_anti")
        rows = count(source)
    # Spark splits a table by file blocks: a small one would be a single task on a single core
    parts = partitions(cores, rows, part_rows)
    return frame.repartition(parts) if frame.rdd.getNumPartitions() < parts else frame


def _start_workers(spark, job: ScoringJob) -> int:
    """One task per core loads the model; returns how many Python workers hold it."""
    cores = spark.sparkContext.defaultParallelism
    slots = spark.range(0, cores, 1, cores)
    pids = slots.mapInArrow(partial(load_scorer, job), WORKER_SCHEMA).collect()
    return len({row.pid for row in pids})


def score_spark(
    job: ScoringJob,
    onnx_path: Path,
    source: Source,
    output: Path,
    done: set[str],
    master: str,
    driver_memory: str = "1g",
    progress: bool = True,
    part_rows: int = 10_000,
) -> int:
    """Score what ``output`` lacks on Spark; returns how many images were scored now."""
    started = time.monotonic()
    spark = spark_session(master, driver_memory, progress)
    print(f"spark: session on {master} up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        # A task gets spark.task.cpus cores; ONNX Runtime uses exactly those, no more
        cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
        job = replace(job, intra_op_threads=cpus)
        spark.sparkContext.addFile(str(onnx_path))
        started = time.monotonic()
        workers = _start_workers(spark, job)
        print(
            f"spark: {workers} Python worker(s) ready in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        started = time.monotonic()
        todo = _todo_frame(spark, source, done, part_rows)
        rows = todo.mapInArrow(partial(score_batches, job), SPARK_SCHEMA)
        rows.write.mode("append").parquet(str(output))
        print(f"spark: scoring job ran {time.monotonic() - started:.2f} s", file=sys.stderr)
        # Counted from what was written, not from a second pass over the input
        return len(done_after(output)) - len(done)
    finally:
        spark.stop()


def done_after(output: Path) -> set[str]:
    from service.scoring.output import read_parts

    return set(read_parts(output, ["path"])["path"])
