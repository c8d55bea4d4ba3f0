"""``python -m training``: dataset | train | evaluate | import. Run with --help for every option."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import training  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from training.import_cli import add_import_parser, check_import_args

ARCHITECTURES = ("cnn", "mobilenetv2", "efficientnetb0", "resnet50")
RESIZE = ("bilinear", "nearest", "bicubic", "area", "lanczos3")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (exclusive)")
    return value


def _model_name(text: str) -> str:
    from service.metadata import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model name: use letters, digits, '_', '.' and '-', starting with "
            "a letter or digit (it becomes the folder OUT/NAME/)"
        )
    return text


def _folds(text: str) -> int:
    value = int(text)
    if value == 1 or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: use 0 (validation split only) or 2 or more")
    return value


def _count(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {minimum}")
        return value

    return parse


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        type=Path,
        required=True,
        help="class folders DIR/<label>/*, or DIR/{train,val,test}/<label>/*",
    )
    g.add_argument(
        "--image-size",
        type=_count(8),
        default=32,
        help="model input height = width in pixels (default 32)",
    )
    g.add_argument(
        "--resize-method",
        choices=RESIZE,
        default="bilinear",
        help="Pillow resampling used to resize (default bilinear); the server uses the same",
    )
    g.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.15,
        help="validation share per class (default 0.15)",
    )
    g.add_argument(
        "--test-fraction", type=_fraction, default=0.15, help="test share per class (default 0.15)"
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="fail on an unreadable file instead of skipping it with a warning",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--name",
        type=_model_name,
        required=True,
        help="model name: published as OUT/NAME/<version>/ (letters, digits, '_', '.', '-'; "
        "starts with a letter or digit)",
    )
    g.add_argument(
        "--model",
        choices=ARCHITECTURES,
        default="cnn",
        help="cnn (small, from scratch; default) or a tf_keras.applications backbone",
    )
    g.add_argument(
        "--weights",
        default="none",
        help="backbone weights: none (default: the whole network trains from random weights), "
        "imagenet (only from the local Keras cache; never downloaded) or a .h5 path",
    )
    g.add_argument(
        "--fine-tune-layers",
        type=_count(0),
        default=20,
        help="top backbone layers unfrozen in phase 2 (default 20)",
    )
    g.add_argument(
        "--cnn-width",
        type=_count(1),
        default=16,
        help="filters in the small cnn's first stage; later stages use 2x and 4x (default 16: "
        "~7 M multiply-adds per 32x32 image, 32 takes ~28 M; ignored by backbones)",
    )
    g.add_argument(
        "--dropout", type=float, default=0.2, help="dropout before the classifier (default 0.2)"
    )
    g.add_argument(
        "--flip",
        choices=("none", "horizontal", "vertical", "horizontal_and_vertical"),
        default="none",
        help="random flips while fitting (default none)",
    )
    g.add_argument(
        "--rotation",
        type=float,
        default=0.05,
        help="random rotation, fraction of a full turn (default 0.05; 0 = off)",
    )
    g.add_argument(
        "--zoom", type=float, default=0.1, help="random zoom fraction (default 0.1; 0 = off)"
    )
    g.add_argument(
        "--translation",
        type=float,
        default=0.1,
        help="random shift, fraction of the size (default 0.1; 0 = off)",
    )
    g.add_argument(
        "--contrast", type=float, default=0.1, help="random contrast factor (default 0.1; 0 = off)"
    )
    g = p.add_argument_group("fitting")
    g.add_argument(
        "--epochs",
        type=_count(0),
        default=30,
        help="phase 1 epochs (frozen base for backbones); 0 = no fitting, still evaluate/export (default 30)",
    )
    g.add_argument(
        "--fine-tune-epochs",
        type=_count(0),
        default=5,
        help="phase 2 epochs, backbones with given weights only, at a 10x lower learning rate "
        "(default 5)",
    )
    g.add_argument(
        "--batch-size",
        type=_count(1),
        default=32,
        help="global batch size, split across replicas (default 32)",
    )
    g.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam learning rate of phase 1 (default 1e-3)",
    )
    g.add_argument(
        "--patience",
        type=_count(1),
        default=6,
        help="early-stopping patience in epochs; LR halves after patience/2 flat epochs (default 6)",
    )
    g.add_argument(
        "--monitor",
        default="val_loss",
        choices=("val_loss", "val_accuracy"),
        help="metric for best checkpoint, early stopping and LR reduction",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=1337,
        help="seed for the split, shuffling, initialisation (default 1337)",
    )
    g.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="checkpoints, CSV + TensorBoard logs, resume state (default build/training/NAME)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --work-dir from its last completed epoch",
    )
    g.add_argument(
        "--strategy",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="tf.distribute strategy; multiworker reads TF_CONFIG, only the chief exports",
    )
    g = p.add_argument_group("thresholds and export")
    target = g.add_mutually_exclusive_group()
    target.add_argument(
        "--target-precision",
        type=_fraction,
        default=None,
        help="per-class thresholds reaching this validation precision (default 0.95)",
    )
    target.add_argument(
        "--target-recall",
        type=_fraction,
        default=None,
        help="per-class thresholds reaching this validation recall instead",
    )
    g.add_argument(
        "--confidence",
        type=_fraction,
        default=0.95,
        help="confidence of the lower bound a threshold must certify the target at (default 0.95)",
    )
    g.add_argument(
        "--calibration-folds",
        type=_folds,
        default=5,
        help="calibrate on out-of-fold predictions over train+val from K extra models "
        "(default 5; costs about K more fits); 0 = on the validation split only",
    )
    g.add_argument(
        "--min-test-accuracy",
        type=float,
        default=None,
        help="refuse to publish below this test accuracy (default: 1.5x the accuracy of always "
        "answering the most frequent label, at least +0.1, at most halfway to 1; 0 = publish anyway)",
    )
    g.add_argument(
        "--out", type=Path, default=Path("models"), help="model repository (default models/)"
    )
    g.add_argument("--opset", type=_count(13), default=17, help="ONNX opset (default 17)")


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
        dest="command", required=True, metavar="{dataset,train,evaluate,import}"
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
    add_import_parser(sub)
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
    # NOTE: TensorFlow logs through absl at INFO (e.g. a "Sharding callback duration" line per
    # epoch); those are TensorFlow's internals, not progress a user needs.
    logging.getLogger("absl").setLevel(logging.WARNING)
    from training.commands import USER_ERRORS, run_command

    try:
        return run_command(args)
    except USER_ERRORS as exc:
        # NOTE: bad data/weights/resume are the user's to fix: one clear line, exit status 1.
        print(f"python -m training {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
