"""The local engine: a thread pool decodes the next batch while ONNX Runtime runs this one.

Decoding (Pillow) and ``session.run`` both release the GIL, so one process keeps every core
busy: decoding threads, one per core, and ONNX Runtime's intra-op threads, one per core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from service.scoring.inputs import Source, batches, count
from service.scoring.model import Item, Scorer
from service.scoring.output import Output


def cores() -> int:
    return len(os.sched_getaffinity(0))


def _decoded(
    scorer: Scorer, items: Iterator[list[Item]], pool: ThreadPoolExecutor
) -> Iterator[tuple[list[Item], list[np.ndarray | str]]]:
    """Batches with their decoded images; the next batch decodes while the caller runs one."""
    pending: tuple[list[Item], list[Future]] | None = None
    for batch in items:
        submitted = (batch, [pool.submit(scorer.decode, item) for item in batch])
        if pending is not None:
            yield pending[0], [f.result() for f in pending[1]]
        pending = submitted
    if pending is not None:
        yield pending[0], [f.result() for f in pending[1]]


def score_local(
    scorer: Scorer,
    source: Source,
    output: Output,
    done: set[str],
    batch_size: int,
    progress: bool,
    threads: int | None = None,
) -> int:
    """Score what ``output`` lacks; returns how many images were scored now."""
    total = count(source)
    scored = 0
    with (
        ThreadPoolExecutor(threads or cores(), "visor-score-decode") as pool,
        tqdm(total=total, initial=len(done), unit="img", disable=not progress) as bar,
    ):
        try:
            for items, decoded in _decoded(scorer, batches(source, done, batch_size), pool):
                output.write(scorer.rows(items, decoded))
                scored += len(items)
                bar.update(len(items))
        finally:
            output.close()  # Also on Ctrl-C: what was scored is kept for the next run
    return scored
