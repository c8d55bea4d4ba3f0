"""What runs inside a Spark executor's Python worker (imported there, kept free of pyspark)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from contract.metadata import ModelMetadata
from service.scoring.model import Item, Scorer, decode_ahead, scoring_settings
from service.scoring.output import SCHEMA
from service.types import InferOptions

# One Scorer (one ONNX Runtime session) per executor process, reused by every task the
# process runs (spark.python.worker.reuse); keyed by the ONNX file's sha256.
_SCORERS: dict[str, Scorer] = {}
WORKER_SCHEMA = "pid int"


@dataclass(frozen=True)
class ScoringJob:
    """Everything an executor needs, small enough to ship in the task closure."""

    metadata_json: str
    onnx_name: str  # the file name given to SparkContext.addFile
    options: InferOptions
    batch_size: int
    intra_op_threads: int = 1  # spark.task.cpus: the cores Spark gives each task


def scorer_for(job: ScoringJob) -> Scorer:
    meta = ModelMetadata.model_validate_json(job.metadata_json)
    key = meta.artifacts["onnx"].sha256
    scorer = _SCORERS.get(key)
    if scorer is None:
        from pyspark import SparkFiles

        settings = scoring_settings(job.intra_op_threads)
        scorer = Scorer(Path(SparkFiles.get(job.onnx_name)), meta, settings, job.options)
        _SCORERS[key] = scorer
    return scorer


def items_of(batch: pa.RecordBatch) -> list[Item]:
    paths = batch.column("path").to_pylist()
    if "content" not in batch.schema.names:
        return [Item(path) for path in paths]
    contents = batch.column("content").to_pylist()
    return [Item(path, content) for path, content in zip(paths, contents, strict=True)]


def score_batches(job: ScoringJob, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function: Arrow batches of paths (and bytes) in, rows out.

    Arrow straight through, no pandas: one output batch per input batch, its images run
    through ONNX Runtime ``job.batch_size`` at a time while a thread decodes the next ones.
    """
    scorer = scorer_for(job)
    with ThreadPoolExecutor(1, "visor-score-decode") as pool:
        for batch in batches:
            items = items_of(batch)
            chunks = (items[i : i + job.batch_size] for i in range(0, len(items), job.batch_size))
            rows: list[dict] = []
            for chunk, decoded in decode_ahead(scorer, chunks, pool):
                rows += scorer.rows(chunk, decoded)
            yield pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


def load_scorer(job: ScoringJob, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The warm-up task: build this worker's Scorer now, answer with the worker's pid."""
    scorer_for(job)
    for _ in batches:
        pass
    yield pa.RecordBatch.from_pydict({"pid": [os.getpid()]}, pa.schema([("pid", pa.int32())]))
