"""What to score: a folder (recursively), a glob, or a Parquet table of paths (and bytes).

A Parquet table needs a ``path`` column; a ``content`` column (binary) carries the image bytes,
so Spark's ``binaryFile`` source written to Parquet is scored as is. Without ``content`` the
paths are read from disk.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from contract.imaging import is_image_file
from service.scoring.model import Item, ScoringError


@dataclass(frozen=True)
class Source:
    """``paths`` for a folder or glob; ``table`` for a Parquet file or folder of parts."""

    text: str
    paths: list[str] | None = None
    table: Path | None = None

    @property
    def has_content(self) -> bool:
        return self.table is not None and "content" in table_columns(self.table)


def table_columns(table: Path) -> list[str]:
    import pyarrow.dataset as ds

    return list(ds.dataset(table, format="parquet").schema.names)


def open_source(text: str) -> Source:
    """Resolve ``--input`` (raises ScoringError when it names nothing to score)."""
    path = Path(text)
    if text.endswith(".parquet") and path.exists():
        if "path" not in table_columns(path):
            raise ScoringError(f"{text} has no 'path' column (columns: {table_columns(path)})")
        return Source(text, table=path)
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        paths = sorted(str(p) for p in files if is_image_file(p))
    elif path.is_file():
        paths = [str(path)]
    else:
        paths = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
    if not paths:
        raise ScoringError(f"--input {text} matches no image file")
    return Source(text, paths=paths)


def count(source: Source) -> int:
    if source.paths is not None:
        return len(source.paths)
    import pyarrow.dataset as ds

    assert source.table is not None
    return ds.dataset(source.table, format="parquet").count_rows()


def batches(source: Source, done: set[str], size: int) -> Iterator[list[Item]]:
    """Items not in ``done``, ``size`` at a time, in the source's order."""
    if source.paths is not None:
        todo = [Item(p) for p in source.paths if p not in done]
        for start in range(0, len(todo), size):
            yield todo[start : start + size]
        return
    yield from _table_batches(source, done, size)


def _table_batches(source: Source, done: set[str], size: int) -> Iterator[list[Item]]:
    import pyarrow.dataset as ds

    assert source.table is not None
    columns = ["path", "content"] if source.has_content else ["path"]
    pending: list[Item] = []
    for record in ds.dataset(source.table, format="parquet").to_batches(columns=columns):
        data = record.to_pydict()
        contents = data.get("content") or [None] * len(data["path"])
        for path, content in zip(data["path"], contents, strict=True):
            if path not in done:
                pending.append(Item(path, content))
            if len(pending) == size:
                yield pending
                pending = []
    if pending:
        yield pending
