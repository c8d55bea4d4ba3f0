"""The subcommands behind ``python -m training`` (argparse lives in ``__main__``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from training.errors import EvaluateError, ResumeError, TrainingError
from training.flags import from_args

if TYPE_CHECKING:
    from training.workflow import RunResult

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
    if args.command == "export":
        from training.workflow import run_export

        return _published(run_export(export_config(args)))
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


def export_config(args: argparse.Namespace) -> RunConfig:
    """The config a finished run saved in ``--work-dir``, with the ``export`` flags given."""
    saved = args.work_dir / "config.json"
    try:
        cfg = RunConfig.from_dict(json.loads(saved.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ResumeError(f"{args.work_dir} is not a Visor work dir ({saved}: {exc})") from exc
    given = vars(args)

    def replaced(section: Any) -> Any:
        names = {f.name for f in dataclasses.fields(section)}
        return dataclasses.replace(section, **{k: v for k, v in given.items() if k in names})

    return dataclasses.replace(
        cfg,
        export=replaced(cfg.export),
        calibration=replaced(cfg.calibration),
        # resume: reuse the out-of-fold predictions a calibration left in the work dir
        fit=dataclasses.replace(cfg.fit, work_dir=args.work_dir, resume=True, quiet=args.quiet),
    )


def _train(cfg: RunConfig) -> int:
    from training.workflow import run_training

    return _published(run_training(cfg))


def _published(result: RunResult) -> int:
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
