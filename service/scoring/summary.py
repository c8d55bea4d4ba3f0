"""The end-of-run summary: what was scored, counts per label, and every file that failed."""

from __future__ import annotations

from collections import Counter

import pandas as pd

MAX_ERROR_LINES = 20


def _counts(values: Counter, order: list[str]) -> str:
    return " ".join(f"{label}={values[label]}" for label in order if values[label]) or "none"


def summary_lines(
    frame: pd.DataFrame, labels: list[str], scored_now: int, seconds: float, where: str
) -> list[str]:
    """Lines to print; ``frame`` is the whole output (earlier runs included)."""
    errors = frame[frame["error"].notna()]
    ok = frame[frame["error"].isna()]
    rate = scored_now / seconds if seconds > 0 else 0.0
    head = (
        f"scored {scored_now} image(s) in {seconds:.2f} s ({rate:.1f} images/s); "
        f"{where} holds {len(frame)} row(s), {len(frame) - scored_now} from earlier runs"
    )
    lines = [
        head,
        f"top-1 label:  {_counts(Counter(ok['label']), labels)}",
        "thresholded:  "
        + _counts(Counter(label for hits in ok["labels"] for label in hits), labels)
        + f" (no label: {sum(len(hits) == 0 for hits in ok['labels'])})",
        f"errors: {len(errors)} file(s)",
    ]
    for path, error in list(zip(errors["path"], errors["error"], strict=True))[:MAX_ERROR_LINES]:
        lines.append(f"  {path}: {error}")
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"  ... {len(errors) - MAX_ERROR_LINES} more in the output's error column")
    return lines
