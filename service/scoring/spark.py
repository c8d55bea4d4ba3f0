"""The Spark engine: the same scoring as a ``mapInPandas`` stage, writing Parquet parts.

The driver lists what is left to score (the output's paths are skipped), ships the ONNX file
with the job (``SparkContext.addFile``: every executor gets a local copy) and appends the rows
to the output folder; Spark's commit protocol publishes the parts only when the job succeeds.
Each executor's Python worker builds one ``Scorer`` and keeps it in a module global
(``spark_worker.py``), so a session is loaded once per process, not once per batch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from service.scoring.inputs import Source
from service.scoring.output import SPARK_SCHEMA
from service.scoring.spark_worker import ScoringJob, score_partitions

REPO_ROOT = Path(__file__).resolve().parents[2]


def spark_session(master: str, batch_size: int, driver_memory: str, progress: bool = True):
    """A small SparkSession: no UI, Arrow transfers of ``batch_size`` rows."""
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

    spark = (
        SparkSession.builder.master(master)
        .appName("visor-score")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", str(progress).lower())
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _todo_frame(spark, source: Source, done: set[str]):
    if source.paths is not None:
        todo = [p for p in source.paths if p not in done]
        # A few thousand images a partition: big enough to amortise a task's start,
        # small enough that every core gets work and a failed task redoes little.
        parts = max(spark.sparkContext.defaultParallelism, math.ceil(len(todo) / 2048))
        # Parallelize splits the list as it ships it; a repartition would add a shuffle
        rdd = spark.sparkContext.parallelize([(p,) for p in todo], min(parts, len(todo)))
        return spark.createDataFrame(rdd, "path string")
    assert source.table is not None
    frame = spark.read.parquet(str(source.table))
    frame = frame.select("path", "content") if source.has_content else frame.select("path")
    if done:
        seen = spark.createDataFrame(pd.DataFrame({"path": sorted(done)}), "path string")
        frame = frame.join(seen, "path", "left_anti")
    cores = spark.sparkContext.defaultParallelism
    # Spark splits a table by file blocks: a small one is a single task on a single core
    return frame.repartition(cores) if frame.rdd.getNumPartitions() < cores else frame


def score_spark(
    job: ScoringJob,
    onnx_path: Path,
    source: Source,
    output: Path,
    done: set[str],
    master: str,
    driver_memory: str = "1g",
    progress: bool = True,
) -> int:
    """Score what ``output`` lacks on Spark; returns how many images were scored now."""
    started = time.monotonic()
    spark = spark_session(master, job.batch_size, driver_memory, progress)
    print(f"spark: session on {master} up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        spark.sparkContext.addFile(str(onnx_path))
        todo = _todo_frame(spark, source, done)
        rows = todo.mapInPandas(lambda frames: score_partitions(job, frames), SPARK_SCHEMA)
        rows.write.mode("append").parquet(str(output))
        # Counted from what was written, not from a second pass over the input
        return len(done_after(output)) - len(done)
    finally:
        spark.stop()


def done_after(output: Path) -> set[str]:
    from service.scoring.output import read_parts

    return set(read_parts(output, ["path"])["path"])
