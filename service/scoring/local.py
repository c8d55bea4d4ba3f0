"""The local engine: a thread pool decodes the next batch while ONNX Runtime runs this one.

Decoding (Pillow) and ``session.run`` both release the GIL, so one process keeps every core
busy: decoding threads, one per core, and ONNX Runtime's intra-op threads, one per core.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from service.scoring.inputs import Source, batches, count
from service.scoring.model import Scorer, decode_ahead
from service.scoring.output import Output


def cores() -> int:
    return len(os.sched_getaffinity(0))


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
            for items, decoded in decode_ahead(scorer, batches(source, done, batch_size), pool):
                output.write(scorer.rows(items, decoded))
                scored += len(items)
                bar.update(len(items))
        finally:
            output.close()  # Also on Ctrl-C: what was scored is kept for the next run
    return scored
