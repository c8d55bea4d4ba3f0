"""Where scores go: Parquet (a folder of parts), CSV or JSON Lines — each resumable.

Resuming means reading the paths an output already holds and scoring only the others, so no
output may ever hold half a row:
- Parquet is a folder of part files (Spark writes the same layout). Each part is written under a
  dot-name, which readers ignore, and renamed into place when complete.
- CSV / JSON Lines get each batch appended in one write; a run killed mid-write can leave a
  partial last line, which the next run cuts off before it appends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from service.scoring.model import ScoringError

log = logging.getLogger(__name__)
COLUMNS = ["path", "model", "version", "label", "score", "labels", "probabilities", "error"]
# The same columns and types as Spark's DDL below, so parts of both engines read as one.
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("labels", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float32())),
        ("error", pa.string()),
    ]
)
SPARK_SCHEMA = (
    "path string, model string, version int, label string, score float, "
    "labels array<string>, probabilities array<float>, error string"
)
LIST_COLUMNS = ("labels", "probabilities")


class Output(Protocol):
    path: Path

    def done(self) -> set[str]: ...

    def write(self, rows: list[dict]) -> None: ...

    def close(self) -> None: ...

    def read(self) -> pd.DataFrame: ...


def open_output(path: Path, part_rows: int = 10_000) -> Output:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ParquetParts(path, part_rows)
    if suffix in (".csv", ".jsonl"):
        return LinesOutput(path)
    raise ScoringError(f"--output {path}: use a .parquet, .csv or .jsonl name")


def read_parts(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Every complete part of a Parquet output folder (dot- and underscore-names skipped)."""
    if not folder.is_dir() or not any(folder.glob("part-*")):
        return pd.DataFrame(columns=columns or COLUMNS)
    return ds.dataset(folder, format="parquet").to_table(columns=columns).to_pandas()


class ParquetParts:
    """A folder of Parquet parts, each renamed into place once written."""

    def __init__(self, path: Path, part_rows: int) -> None:
        if path.exists() and not path.is_dir():
            raise ScoringError(f"--output {path} is a file; a .parquet output is a folder of parts")
        self.path, self.part_rows = path, part_rows
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob(".part-*.tmp"):  # A killed run's unfinished part
            stale.unlink()
        self._rows: list[dict] = []

    def done(self) -> set[str]:
        return set(read_parts(self.path, ["path"])["path"])

    def write(self, rows: list[dict]) -> None:
        self._rows.extend(rows)
        while len(self._rows) >= self.part_rows:
            self._write_part(self._rows[: self.part_rows])
            self._rows = self._rows[self.part_rows :]

    def close(self) -> None:
        if self._rows:
            self._write_part(self._rows)
        self._rows = []

    def read(self) -> pd.DataFrame:
        return read_parts(self.path)

    def _write_part(self, rows: list[dict]) -> None:
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.path / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
        os.replace(tmp, self.path / name)


class LinesOutput:
    """CSV (lists as JSON text) or JSON Lines, appended one batch per write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.csv = path.suffix.lower() == ".csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_line(path)

    def done(self) -> set[str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return set()
        return set(self.read()["path"])

    def write(self, rows: list[dict]) -> None:
        header = self.csv and (not self.path.exists() or self.path.stat().st_size == 0)
        text = _csv_text(rows, header) if self.csv else "".join(json.dumps(r) + "\n" for r in rows)
        with self.path.open("a", encoding="utf-8", newline="") as out:
            out.write(text)

    def close(self) -> None:
        pass

    def read(self) -> pd.DataFrame:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame(columns=COLUMNS)
        if not self.csv:
            return pd.read_json(self.path, lines=True, dtype=False)
        frame = pd.read_csv(
            self.path,
            keep_default_na=False,
            na_values={"label": [""], "score": [""], "error": [""]},
        )
        for column in LIST_COLUMNS:
            frame[column] = frame[column].map(json.loads)
        return frame.astype({"error": object, "label": object}).replace({float("nan"): None})


def _csv_text(rows: list[dict], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if k in LIST_COLUMNS else v for k, v in row.items()})
    return buffer.getvalue()


def _cut_partial_line(path: Path) -> None:
    """Drop an unfinished last line (a run killed mid-write) so appending starts clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    log.warning("%s ends in a partial line (an interrupted run): dropping it", path)
    with path.open("r+b") as out:
        out.truncate(keep)
