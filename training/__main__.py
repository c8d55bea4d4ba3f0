"""``python -m training``: dataset | train | export | evaluate | import | publish. Run with --help for every option."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import training  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from training.config import (
    AugmentConfig,
    CalibrationConfig,
    DataConfig,
    ExportConfig,
    FitConfig,
    ModelConfig,
)
from training.flags import add_flags, fraction
from training.import_cli import add_import_parser, check_import_args


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """Every flag comes from a config field (training/config.py): one default, one help text."""
    add_flags(p.add_argument_group("data"), DataConfig)
    model = p.add_argument_group("model")
    add_flags(model, ExportConfig, skip=_EXPORT_FLAGS)  # --name first: what is being trained
    add_flags(model, ModelConfig)
    add_flags(p.add_argument_group("augmentation (while fitting only)"), AugmentConfig)
    add_flags(p.add_argument_group("fitting"), FitConfig)
    g = p.add_argument_group("thresholds and export")
    target = g.add_mutually_exclusive_group()
    target.add_argument(
        "--target-precision",
        type=fraction,
        default=None,
        help=f"per-class thresholds certified for this precision (default "
        f"{CalibrationConfig.target})",
    )
    target.add_argument(
        "--target-recall",
        type=fraction,
        default=None,
        help="per-class thresholds certified for this recall instead",
    )
    add_flags(g, CalibrationConfig)
    add_flags(g, ExportConfig, skip=("name",))


_EXPORT_FLAGS = ("out_dir", "opset", "min_test_accuracy", "parity_atol", "parity_rtol")


def _add_export_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="evaluate, calibrate, export, check and publish the model a finished train run "
        "left in --work-dir, without fitting it again (after a parity failure or a refused "
        "publish)",
    )
    ex.add_argument(
        "--work-dir", type=Path, required=True, help="the work dir of a finished train run"
    )
    add_flags(ex, ExportConfig, overrides="as the run had")
    add_flags(ex, CalibrationConfig, overrides="as the run had")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate, calibrate and export Visor image classifiers.",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or info logs (warnings and errors only)",
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{dataset,train,export,evaluate,import,publish}",
    )
    ds = sub.add_parser("dataset", help="write a bundled data set as class folders")
    ds.add_argument(
        "which",
        choices=("digits",),
        help="digits: scikit-learn's 8x8 handwritten digits (1,797 PNGs)",
    )
    ds.add_argument(
        "--out", type=Path, required=True, help="folder to write DIR/<label>/*.png into"
    )
    tr = sub.add_parser(
        "train", help="fit -> evaluate -> calibrate -> export -> publish OUT/NAME/<version>/"
    )
    tr.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars or info logs",
    )
    _add_train_args(tr)
    ev = sub.add_parser(
        "evaluate", help="score a published version (ONNX) on a class-folder data set"
    )
    ev.add_argument(
        "--model-dir", type=Path, required=True, help="a version folder, e.g. models/digits/1"
    )
    ev.add_argument(
        "--data",
        type=Path,
        required=True,
        help="class folders DIR/<label>/* (labels must be the model's)",
    )
    ev.add_argument(
        "--strict", action="store_true", help="fail on an unreadable file instead of skipping it"
    )
    _add_export_parser(sub)
    add_import_parser(sub)
    from training.publish_remote import add_publish_parser

    add_publish_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "import":
        check_import_args(parser, args)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # TensorFlow logs through absl at INFO (e.g. a "Sharding callback duration" line per
    # epoch); those are TensorFlow's internals, not progress a user needs.
    logging.getLogger("absl").setLevel(logging.WARNING)
    from training.commands import USER_ERRORS, run_command

    try:
        return run_command(args)
    except USER_ERRORS as exc:
        # Bad data/weights/resume are the user's to fix: one clear line, exit status 1.
        print(f"python -m training {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
