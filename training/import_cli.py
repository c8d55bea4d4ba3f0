"""The ``import`` subcommand's flags and its run (the logic lives in training/importer.py)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, get_args

from contract.metadata import ResizeMethod
from training.flags import repository

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RANGES = ("0,255", "0,1", "-1,1")


def _existing(kind: str):
    def parse(text: str) -> Path:
        path = Path(text)
        ok = path.is_dir() if kind == "folder" else path.is_file()
        if not ok:
            raise argparse.ArgumentTypeError(f"{text} is not an existing {kind}")
        return path

    return parse


def _model_path(text: str) -> Path:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return Path(text)


def _name(text: str) -> str:
    if not NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '_', '.', '-'")
    return text


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not match or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give N (square) or HxW, e.g. 224 or 96x128")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def _unit(open_interval: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > 0.0 if open_interval else value >= 0.0
        high_ok = value < 1.0 if open_interval else value <= 1.0
        if not (low_ok and high_ok):
            raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
        return value

    return parse


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one number or one per channel, comma-separated, e.g. 0.485,0.456,0.406"
        ) from None
    return values


def add_import_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="publish a model trained elsewhere (Keras 2/3 .keras/.h5, SavedModel, ONNX)",
        description="Wrap a Keras 2 (tf-keras) or Keras 3 model, or an ONNX image classifier "
        "from any framework, so it takes raw pixels 0..255 [N,H,W,C] and answers probabilities; "
        "export, check parity against the source and publish OUT/NAME/<version>/.",
    )
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="less output")
    p.add_argument(
        "model",
        type=_model_path,
        help="a .keras or .h5 file (Keras 2 or 3), a tf-keras SavedModel folder, or a .onnx file",
    )
    p.add_argument("--labels", type=_existing("file"), required=True, help="one label per line")
    p.add_argument("--name", type=_name, required=True, help="published as OUT/NAME/<version>/")
    p.add_argument(
        "--out",
        type=repository,
        default=Path("models"),
        help="model repository: a folder, or a bucket (s3://bucket/prefix, gs://, az://)",
    )
    p.add_argument(
        "--input-range",
        choices=RANGES,
        help="pixel range the model was trained on; default: 0,255 when it starts with a "
        "Rescaling/Normalization layer, otherwise this flag is required",
    )
    p.add_argument("--color-mode", choices=("grayscale", "rgb"), help="default: from channels")
    p.add_argument("--image-size", type=_size, help="N or HxW; default: the model's input size")
    p.add_argument(
        "--resize-method",
        choices=get_args(ResizeMethod),
        default="bilinear",
        help="how the server resizes images to the input size (default bilinear)",
    )
    p.add_argument(
        "--calibration-data",
        type=_existing("folder"),
        help="labelled class folders DIR/<label>/*: calibrate thresholds and measure metrics",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=_unit(True), help="default 0.95")
    target.add_argument("--target-recall", type=_unit(True))
    p.add_argument(
        "--threshold",
        type=_unit(False),
        help="without --calibration-data: the fixed threshold of every class (default 0.5)",
    )
    p.add_argument(
        "--opset", type=int, default=17, help="ONNX opset of a Keras export (default 17)"
    )
    onnx = p.add_argument_group("ONNX models (preprocessing put into the graph)")
    onnx.add_argument(
        "--input-layout",
        choices=("nchw", "nhwc"),
        help="the model's input layout (PyTorch: nchw); default: from the input shape",
    )
    onnx.add_argument(
        "--mean",
        type=_floats,
        help="per-channel mean subtracted after --input-range, e.g. 0.485,0.456,0.406 (default 0)",
    )
    onnx.add_argument(
        "--std",
        type=_floats,
        help="per-channel std divided by after the mean, e.g. 0.229,0.224,0.225 (default 1)",
    )
    onnx.add_argument(
        "--outputs",
        choices=("logits", "probabilities"),
        help="what the model answers; default: probabilities when the graph ends in "
        "Softmax/Sigmoid, otherwise logits (a softmax is added)",
    )
    p.add_argument("--seed", type=int, default=1337, help="seed of the calibration split")


def check_import_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot express (exit 2 with one line, like any bad flag)."""
    targeted = args.target_precision is not None or args.target_recall is not None
    if args.calibration_data is None and targeted:
        parser.error("--target-precision/--target-recall need --calibration-data")
    if args.calibration_data is not None and args.threshold is not None:
        parser.error("--threshold is for uncalibrated imports: drop it or --calibration-data")
    onnx_only = [f for f in ("input_layout", "mean", "std", "outputs") if getattr(args, f)]
    if onnx_only and args.model.suffix.lower() != ".onnx":
        flags = ", ".join("--" + f.replace("_", "-") for f in onnx_only)
        parser.error(
            f"{flags}: only for .onnx models (a Keras model takes NHWC and says its range)"
        )


def run_import_command(args: argparse.Namespace) -> int:
    from training.config import ImportConfig
    from training.importer import run_import

    cfg = ImportConfig(
        model_path=args.model,
        labels_path=args.labels,
        name=args.name,
        out_dir=args.out,
        input_range=args.input_range,
        color_mode=args.color_mode,
        image_size=args.image_size,
        resize_method=args.resize_method,
        calibration_data=args.calibration_data,
        policy="recall" if args.target_recall is not None else "precision",
        target=args.target_recall or args.target_precision or 0.95,
        threshold=0.5 if args.threshold is None else args.threshold,
        opset=args.opset,
        seed=args.seed,
        input_layout=args.input_layout,
        mean=args.mean or (0.0,),
        std=args.std or (1.0,),
        outputs=args.outputs,
    )
    version_dir = run_import(cfg)
    print(f"published {version_dir}")
    return 0
