"""What live verification adds to a request: ``VersionMonitor.record`` per request, in µs, and
the memory a recorded request leaves behind.

    python -m loadtests.experiments.monitor_cost --version-dir models/digits/1 --images 1

Records synthetic answers of ``--images`` images into a monitor of the version's metadata (with
and without a drift reference) and prints the best of ``--repeat`` timings as JSON; the timing
includes signing the request id (the receipt feedback is read from). Memory: tracemalloc over
``--number`` requests recorded into a fresh monitor.
"""

from __future__ import annotations

import argparse
import json
import timeit
import tracemalloc
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from contract.metadata import Histogram, Reference, load_metadata
from service.metrics import Metrics
from service.monitoring import VersionMonitor
from service.monitoring.receipts import Receipts
from service.settings import Settings
from service.types import Classification


def _monitor(meta: object, settings: Settings) -> VersionMonitor:
    receipts = Receipts(["a key"], settings.monitor_prediction_ttl_s)
    return VersionMonitor(meta, Metrics(CollectorRegistry()), settings, receipts)  # type: ignore[arg-type]


def _cost_us(
    monitor: VersionMonitor, result: Classification, served: np.ndarray, n: int, repeat: int
) -> float:
    best = min(timeit.repeat(lambda: monitor.record(result, served), number=n, repeat=repeat))
    return best / n * 1e6


def _bytes_per_request(
    meta: object, settings: Settings, result: Classification, served: np.ndarray, n: int
) -> int:
    monitor = _monitor(meta, settings)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(n):
        monitor.record(result, served)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return round(grown / min(n, settings.monitor_predictions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    meta = load_metadata(args.version_dir)
    classes = len(meta.labels)
    if meta.reference is None:  # NOTE: a uniform reference: the cost does not depend on its values
        edges = np.linspace(0, 1, 11).tolist()
        meta = meta.model_copy(
            update={
                "reference": Reference(
                    split="synthetic",
                    samples=1,
                    label_distribution=dict.fromkeys(meta.labels, 1 / classes),
                    confidence=Histogram(edges=edges, fractions=[0.1] * 10),
                )
            }
        )
    probs = np.random.default_rng(0).dirichlet(np.ones(classes), args.images).astype(np.float32)
    served = np.array([c.threshold for c in meta.thresholds.per_class], np.float32)
    result = Classification(meta.name, meta.version, meta.labels, probs, 1, served, "calibrated")
    result.hits  # NOTE: the engine has computed it already (visor_predicted_labels) # noqa: B018
    settings = Settings(models=args.version_dir, _env_file=None)
    out = {"images_per_request": args.images}
    for name, m in (
        ("record_us", meta),
        ("record_without_reference_us", meta.model_copy(update={"reference": None})),
    ):
        monitor = _monitor(m, settings)
        out[name] = round(_cost_us(monitor, result, served, args.number, args.repeat), 2)
    out["stored_bytes_per_request"] = _bytes_per_request(
        meta, settings, result, served, args.number
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
