"""Typed settings of one training run (data, augmentation, model, fitting, calibration, export)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from contract.metadata import ColorMode, ResizeMethod
from training.flags import at_least, fraction, model_name, non_negative, option, repository
from training.flags import folds as flags_folds

if TYPE_CHECKING:
    from training.parity import ParityTolerance

Architecture = Literal["cnn", "mobilenetv2", "efficientnetb0", "resnet50"]
Strategy = Literal["none", "mirrored", "multiworker"]


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split and decoded."""

    data_dir: Path = option(
        help="class folders DIR/<label>/*, or DIR/{train,val,test}/<label>/*", flag="--data"
    )
    image_size: int = option(32, help="model input height = width in pixels", parse=at_least(8))
    val_fraction: float = option(0.15, help="validation share per class", parse=fraction)
    test_fraction: float = option(0.15, help="test share per class", parse=fraction)
    resize_method: ResizeMethod = option(
        "bilinear", help="Pillow resampling used to resize; the server uses the same"
    )
    strict: bool = option(
        False, help="fail on an unreadable file instead of skipping it with a warning"
    )
    seed: int = option(1337, help="seed for the split, shuffling, initialisation")


@dataclass(frozen=True)
class AugmentConfig:
    """Keras preprocessing layers applied during fitting only (0 / "none" disables one)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = option(
        "none", help="random flips while fitting"
    )
    rotation: float = option(0.05, help="random rotation, fraction of a full turn; 0 = off")
    zoom: float = option(0.1, help="random zoom fraction; 0 = off")
    translation: float = option(0.1, help="random shift, fraction of the size; 0 = off")
    contrast: float = option(0.1, help="random contrast factor; 0 = off")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build."""

    architecture: Architecture = option(
        "cnn",
        help="cnn (small, from scratch) or a tf_keras.applications backbone",
        flag="--model",
    )
    weights: str = option(
        "none",
        help="backbone weights: none (the whole network trains from random weights), imagenet "
        "(only from the local Keras cache; never downloaded) or a .h5 path",
    )
    fine_tune_layers: int = option(
        20, help="top backbone layers unfrozen in phase 2", parse=at_least(0)
    )
    dropout: float = option(0.2, help="dropout before the classifier")
    cnn_width: int = option(
        16,
        help="filters in the small cnn's first stage; later stages use 2x and 4x (ignored by "
        "backbones; docs/training.md gives the cost per image)",
        parse=at_least(1),
    )


@dataclass(frozen=True)
class FitConfig:
    """Optimisation, callbacks, checkpoints and distribution."""

    work_dir: Path = option(
        Path("build/training"),
        help="checkpoints, CSV + TensorBoard logs, resume state (default build/training/NAME)",
        cli_default=None,
    )
    epochs: int = option(
        30,
        help="phase 1 epochs (frozen base for backbones with given weights); 0 = no fitting, "
        "still evaluate/export",
        parse=at_least(0),
    )
    fine_tune_epochs: int = option(
        5,
        help="phase 2 epochs, backbones with given weights only, at a 10x lower learning rate",
        parse=at_least(0),
    )
    batch_size: int = option(32, help="global batch size, split across replicas", parse=at_least(1))
    learning_rate: float = option(1e-3, help="Adam learning rate of phase 1")
    patience: int = option(
        6,
        help="early-stopping patience in epochs; LR halves after patience/2 flat epochs",
        parse=at_least(1),
    )
    monitor: Literal["val_loss", "val_accuracy"] = option(
        "val_loss", help="metric for best checkpoint, early stopping and LR reduction"
    )
    resume: bool = option(False, help="continue the run in --work-dir from its last epoch")
    quiet: bool = False  # the CLI's global --quiet
    strategy: Strategy = option(
        "none", help="tf.distribute strategy; multiworker reads TF_CONFIG, only the chief exports"
    )
    seed: int = 1337  # the CLI's --seed (DataConfig's), one seed for the whole run


@dataclass(frozen=True)
class CalibrationConfig:
    """Per-class thresholds whose lower confidence bound of precision (or recall) reaches ``target``.

    ``folds`` >= 2: calibrate on out-of-fold predictions over train+val from that many extra
    models (cross-fitting); 0: on the validation split only; None: chosen per run
    (training/crossfit.py: choose_folds). ``policy`` and ``target`` come from
    the CLI's --target-precision / --target-recall (one of the two).
    """

    policy: Literal["precision", "recall"] = "precision"
    target: float = 0.95
    confidence: float = option(
        0.95,
        help="confidence of the lower bound a threshold must certify the target at",
        parse=fraction,
    )
    folds: int | None = option(
        None,
        help="auto (default): cross-fit on 5 folds unless every class has the validation images "
        "to certify the target, then the validation split alone (no extra fits); K >= 2: "
        "always cross-fit on out-of-fold predictions over train+val from K extra models (about "
        "K more fits, only the head for transfer learning); 0 = the validation split only",
        flag="--calibration-folds",
        parse=flags_folds,
    )


@dataclass(frozen=True)
class ExportConfig:
    """Where and how the version folder is published."""

    name: str = option(
        help="model name: published as OUT/NAME/<version>/ (letters, digits, '_', '.', '-'; "
        "starts with a letter or digit)",
        parse=model_name,
    )
    out_dir: Path | str = option(
        Path("models"),
        help="model repository: a folder, or a bucket (s3://bucket/prefix, gs://, az://)",
        flag="--out",
        parse=repository,
    )
    opset: int = option(17, help="ONNX opset", parse=at_least(13))
    parity_atol: float = option(
        1e-5,
        help="export parity: each artifact's probabilities within ATOL + RTOL * p of Keras's, "
        "and the same top-1 label (docs/training.md)",
        parse=non_negative,
    )
    parity_rtol: float = option(
        1e-3, help="export parity: the relative part of that tolerance", parse=non_negative
    )
    parity_batch: int = 32
    min_test_accuracy: float | None = option(
        None,
        help="refuse to publish below this test accuracy (default: 1.5x the accuracy of always "
        "answering the most frequent label, at least +0.1, at most halfway to 1; 0 = publish "
        "anyway)",
    )

    @property
    def parity_tolerance(self) -> ParityTolerance:
        from training.parity import ParityTolerance

        return ParityTolerance(self.parity_atol, self.parity_rtol)


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``python -m training train`` needs."""

    data: DataConfig
    export: ExportConfig
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (paths as strings), as stored in metadata ``training``."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunConfig:
        """The config :meth:`to_dict` stored (a work dir's config.json); missing fields default."""
        hints = typing.get_type_hints(cls)
        return cls(
            **{
                f.name: _section(hints[f.name], saved[f.name])
                for f in dataclasses.fields(cls)
                if isinstance(saved.get(f.name), dict)
            }
        )


def _section(kind: type, saved: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(kind)
    values = {}
    for f in dataclasses.fields(kind):
        if f.name not in saved:
            continue
        value, hint = saved[f.name], hints[f.name]
        if hint is Path:
            value = Path(value)
        elif Path in typing.get_args(hint) and isinstance(value, str):
            value = repository(value)
        values[f.name] = value
    return kind(**values)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value) if isinstance(value, Path) else value


@dataclass(frozen=True)
class ImportConfig:
    """Everything ``python -m training import`` needs."""

    model_path: Path
    labels_path: Path
    name: str
    out_dir: Path | str = Path("models")  # a str is a bucket URL (training/publish_remote.py)
    input_range: str | None = None  # A key of INPUT_RANGES; None: read from the model
    color_mode: ColorMode | None = None  # None: from the model's channels
    image_size: tuple[int, int] | None = None  # (height, width); None: from the model
    resize_method: str = "bilinear"
    calibration_data: Path | None = None
    policy: str = "precision"
    target: float = 0.95
    threshold: float = 0.5
    opset: int = 17
    seed: int = 1337
    input_layout: str | None = None  # ONNX only: "nchw" | "nhwc"; None: from the input shape
    mean: tuple[float, ...] = (0.0,)  # ONNX only: per-channel mean, after the range
    std: tuple[float, ...] = (1.0,)  # ONNX only: per-channel std, after the range
    outputs: str | None = None  # ONNX only: "logits" | "probabilities"; None: from the graph


@dataclass(frozen=True)
class InputShape:
    height: int
    width: int
    channels: int

    @property
    def color_mode(self) -> ColorMode:
        return "grayscale" if self.channels == 1 else "rgb"
