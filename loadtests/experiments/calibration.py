"""Do certified thresholds keep their promise on the held-out test split? A multi-seed experiment.

Trains digits with the CLI's defaults once per seed (``--seed`` changes the split, the
initialisation and the folds), reads each published ``metadata.json`` and counts, per (class,
seed) pair, whether a class reported *certified* reached the target on the test split, which the
calibration never sees. Writes a JSON with every pair and the totals.

    python -m loadtests.experiments.calibration --seeds 1 2 3 4 5 --out docs/calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contract.metadata import load_metadata


def _train(data: Path, out: Path, seed: int, extra: list[str]) -> float:
    """One default training run; returns its wall time in seconds."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "training", "--quiet", "train", "--data", str(data)]
        + ["--name", f"digits-seed{seed}", "--out", str(out), "--seed", str(seed)]
        + ["--work-dir", str(out.parent / f"work-{seed}"), *extra],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return time.monotonic() - started


def _pairs(version: Path, seed: int) -> list[dict]:
    meta = load_metadata(version)
    t = meta.thresholds
    rows = []
    for c in t.per_class:
        held_out = c.test_precision if t.policy == "precision" else c.test_recall
        rows.append(
            {
                "seed": seed,
                "label": c.label,
                "threshold": c.threshold,
                "certified": c.certified,
                "lower_bound": c.lower_bound,
                "support": c.support,
                "calibration_point": c.val_precision if t.policy == "precision" else c.val_recall,
                "test_precision": c.test_precision,
                "test_recall": c.test_recall,
                "held_out_reached": held_out is not None and held_out >= (t.target or 0.0),
            }
        )
    return rows


def summarise(pairs: list[dict], seeds: int) -> dict:
    certified = [p for p in pairs if p["certified"]]
    held = [p for p in certified if p["held_out_reached"]]
    per_seed = {
        str(s): sum(p["certified"] for p in pairs if p["seed"] == s)
        for s in sorted({p["seed"] for p in pairs})
    }
    return {
        "seeds": seeds,
        "pairs": len(pairs),
        "certified_pairs": len(certified),
        "certified_per_seed": per_seed,
        "certified_reaching_target_on_test": len(held),
        "fraction_reaching": len(held) / len(certified) if certified else None,
        "uncertified_reaching_target_on_test": sum(
            p["held_out_reached"] for p in pairs if not p["certified"]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("train_args", nargs="*", help="extra train flags, after --")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="visor-calibration-"))
    data = work / "digits"
    if not data.exists():
        subprocess.run(
            [sys.executable, "-m", "training", "dataset", "digits", "--out", str(data)], check=True
        )
    pairs, seconds = [], {}
    for seed in args.seeds:
        models = work / f"models-{seed}"
        seconds[str(seed)] = round(_train(data, models, seed, args.train_args), 1)
        pairs += _pairs(models / f"digits-seed{seed}" / "1", seed)
        print(json.dumps(summarise(pairs, len(seconds))), flush=True)
    result = {
        "command": " ".join(["python -m loadtests.experiments.calibration", *sys.argv[1:]]),
        "train_args": args.train_args,
        "summary": summarise(pairs, len(args.seeds)),
        "train_seconds": seconds,
        "pairs": pairs,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
