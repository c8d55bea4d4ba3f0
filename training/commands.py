"""The subcommands behind ``python -m training`` (argparse lives in ``__main__``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from training.config import (
    AugmentConfig,
    CalibrationConfig,
    DataConfig,
    ExportConfig,
    FitConfig,
    ModelConfig,
    RunConfig,
)
from training.data import scan_labelled, write_digits
from training.errors import EvaluateError, TrainingError
from training.flags import from_args

log = logging.getLogger("training")


USER_ERRORS: tuple[type[Exception], ...] = (TrainingError, FileNotFoundError)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; returns the exit status."""
    if args.command == "dataset":
        count = write_digits(args.out)
        print(f"wrote {count} images to {args.out}/<digit>/*.png")
        return 0
    if args.command == "train":
        return _train(run_config(args))
    if args.command == "import":
        from training.import_cli import run_import_command

        return run_import_command(args)
    if args.command == "publish":
        from training.publish_remote import run_publish_command

        return run_publish_command(args)
    return _evaluate(args.model_dir, args.data, args.strict)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The parsed ``train`` flags → the run's config (training/flags.py maps fields to flags)."""
    policy = "recall" if args.target_recall is not None else "precision"
    target = args.target_recall if policy == "recall" else args.target_precision
    calibration = {"policy": policy} | ({"target": target} if target is not None else {})
    return RunConfig(
        data=from_args(DataConfig, args),
        export=from_args(ExportConfig, args),
        augment=from_args(AugmentConfig, args),
        model=from_args(ModelConfig, args),
        fit=from_args(
            FitConfig,
            args,
            work_dir=args.work_dir or Path("build/training") / args.name,
            quiet=args.quiet,
            seed=args.seed,
        ),
        calibration=from_args(CalibrationConfig, args, **calibration),
    )


def _train(cfg: RunConfig) -> int:
    from training.workflow import run_training

    result = run_training(cfg)
    if result.version_dir is not None and result.metrics is not None:
        print(
            f"published {result.version_dir} test_accuracy={result.metrics.accuracy:.4f} "
            f"seconds={result.seconds:.1f}"
        )
    return 0


def _evaluate(version_dir: Path, data_dir: Path, strict: bool) -> int:
    """TF-free: ONNX Runtime on Pillow-decoded images, metrics at argmax and at the thresholds."""
    import onnxruntime as ort

    from contract.imaging import decode_image
    from contract.metadata import load_metadata
    from training.evaluate import compute_metrics

    meta = load_metadata(version_dir)
    paths, names = scan_labelled(data_dir, strict)
    unknown = sorted(set(names) - set(meta.labels))
    if unknown:
        raise EvaluateError(f"{data_dir} has labels {unknown} that model {meta.name} does not know")
    spec = meta.input
    pixels = np.stack(
        [
            decode_image(p, spec.color_mode, (spec.height, spec.width), spec.resize_method)
            for p in paths
        ]
    ).astype(np.float32)
    session = ort.InferenceSession(
        str(version_dir / meta.artifacts["onnx"].path), providers=["CPUExecutionProvider"]
    )
    probs = session.run([meta.output.name], {spec.name: pixels})[0]
    y = np.asarray([meta.labels.index(n) for n in names])
    metrics = compute_metrics(y, probs, meta.labels)
    thresholds = np.asarray([c.threshold for c in meta.thresholds.per_class])
    predicted = probs >= thresholds
    print(
        json.dumps(
            {
                "model": meta.name,
                "version": meta.version,
                "images": len(y),
                "accuracy": metrics.accuracy,
                "macro_f1": metrics.macro_f1,
                "confusion_matrix": metrics.confusion_matrix,
                "thresholded": {
                    label: {
                        "precision": _ratio(predicted[:, c] & (y == c), predicted[:, c]),
                        "recall": _ratio(predicted[:, c] & (y == c), y == c),
                    }
                    for c, label in enumerate(meta.labels)
                },
            },
            indent=2,
        )
    )
    return 0


def _ratio(hits: np.ndarray, base: np.ndarray) -> float | None:
    return float(hits.sum() / base.sum()) if base.any() else None
