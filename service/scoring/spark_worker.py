"""What runs inside a Spark executor's Python worker (imported there, kept free of pyspark)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from contract.metadata import ModelMetadata
from service.scoring.model import Item, Scorer, scoring_settings
from service.scoring.output import COLUMNS
from service.types import InferOptions

# One Scorer (one ONNX Runtime session) per executor process, reused by every task the
# process runs (spark.python.worker.reuse); keyed by the ONNX file's sha256.
_SCORERS: dict[str, Scorer] = {}


@dataclass(frozen=True)
class ScoringJob:
    """Everything an executor needs, small enough to ship in the task closure."""

    metadata_json: str
    onnx_name: str  # the file name given to SparkContext.addFile
    options: InferOptions
    batch_size: int
    intra_op_threads: int = 1  # Spark runs a task per core; each task one thread


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


def score_frame(scorer: Scorer, frame: pd.DataFrame) -> pd.DataFrame:
    contents = frame["content"] if "content" in frame else [None] * len(frame)
    items = [
        Item(path, None if content is None else bytes(content))
        for path, content in zip(frame["path"], contents, strict=True)
    ]
    rows = scorer.rows(items, [scorer.decode(item) for item in items])
    return pd.DataFrame(rows, columns=COLUMNS)


def score_partitions(job: ScoringJob, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The ``mapInPandas`` function: Arrow batches of paths (and bytes) in, rows out."""
    scorer = scorer_for(job)
    for frame in frames:
        for start in range(0, len(frame), job.batch_size):
            yield score_frame(scorer, frame.iloc[start : start + job.batch_size])
