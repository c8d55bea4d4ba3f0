"""What calibration costs, before and after choosing the method from the data (issue 22).

Runs ``python -m training train`` on each data set twice or three times, one after the other on
the same machine: "before" with the code of another tree (``--before-tree``, e.g. ``git archive
main``: 5-fold cross-fitting of whole models by default), "after" with this tree's defaults
(``--calibration-folds auto``), and for the transfer-learning run also this tree with
``--calibration-folds 5`` (heads on the frozen backbone's features). Records wall time, the
calibration method and the certified classes of each published version.

    python -m loadtests.experiments.calibration_cost --before-tree build/main-tree \\
        --work build/calibration-cost --out docs/calibration-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from contract.metadata import load_metadata
from tests.helpers.training import write_shapes

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--min-test-accuracy", "0", "--quiet"]


def _data(work: Path) -> dict[str, tuple[Path, list[str]]]:
    digits = work / "digits"
    if not digits.exists():
        subprocess.run(
            [sys.executable, "-m", "training", "dataset", "digits", "--out", str(digits)],
            check=True,
            cwd=ROOT,
        )
    shapes = work / "shapes"
    if not shapes.exists():
        write_shapes(shapes, count=500, size=32, seed=0)
    backbone = work / "backbone.h5"
    if not backbone.exists():
        write_shapes(work / "backbone-statistics", count=100, size=32, seed=1)
        subprocess.run(
            [sys.executable, "-c", _BACKBONE, str(backbone), str(work / "backbone-statistics")],
            check=True,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        )
    transfer = ["--model", "mobilenetv2", "--weights", str(backbone), "--epochs", "3"]
    return {
        "digits cnn 16px": (digits, ["--image-size", "16", "--epochs", "10"]),
        "shapes cnn 32px": (shapes, ["--image-size", "32", "--epochs", "10"]),
        "shapes mobilenetv2 transfer 32px": (shapes, [*transfer, "--fine-tune-epochs", "2"]),
    }


# MobileNetV2 with random weights saved as a local weight file: a transfer run (frozen base,
# then fine-tuning) without downloading ImageNet weights. Its BatchNorm statistics come from one
# pass over other shapes images (seed 1, not the data set): with the initial ones (mean 0,
# variance 1) the frozen random backbone gave every image the same answer.
_BACKBONE = """
import sys, numpy as np, tf_keras as k
from pathlib import Path
from PIL import Image
paths = sorted(Path(sys.argv[2]).rglob("*.png"))
x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths]) / 127.5 - 1
base = k.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
for layer in base.layers:
    if isinstance(layer, k.layers.BatchNormalization):
        layer.momentum = 0.0
base(x, training=True)
base.save_weights(sys.argv[1])
"""


def _run(tree: Path, name: str, data: Path, args: list[str], work: Path) -> dict:
    out, run_dir = work / "models", work / "runs" / name
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", str(data), "--name", name]
        + ["--out", str(out), "--work-dir", str(run_dir), *args, *FAST],
        check=False,
        cwd=tree,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    version = Path(done.stdout.split()[1])
    meta = load_metadata(version)
    per_class = meta.thresholds.per_class
    return {
        "seconds": round(seconds, 1),
        "certified": sum(c.certified for c in per_class),
        "classes": len(per_class),
        "method": meta.thresholds.method,
        "test_accuracy": meta.metrics.accuracy if meta.metrics else None,
        "test_precision_at_thresholds": [c.test_precision for c in per_class],
        "lower_bounds": [round(c.lower_bound, 4) for c in per_class],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-tree", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("build/calibration-cost"))
    parser.add_argument("--out", type=Path, default=Path("docs/calibration-cost.json"))
    parser.add_argument("--only", help="run the data sets whose label contains this (merged)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    if args.only and args.out.exists():
        results = json.loads(args.out.read_text())
    for label, (data, extra) in _data(work).items():
        if args.only and args.only not in label:
            continue
        slug = label.replace(" ", "-")
        runs = [("before", args.before_tree.resolve(), []), ("after", ROOT, [])]
        if "transfer" in label:
            runs.append(("after, --calibration-folds 5", ROOT, ["--calibration-folds", "5"]))
        for when, tree, more in runs:
            name = f"{slug}-{when.split(',')[0]}{'-folds' if more else ''}"
            results[f"{label}: {when}"] = row = _run(tree, name, data, extra + more, work)
            print(label, when, json.dumps(row), flush=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    with open("/proc/loadavg") as fh:
        results[f"load_average_at_end ({args.only or 'all'})"] = fh.read().split()[:3]
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
