"""Typed settings of one training run (data, augmentation, model, fitting, calibration, export)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Architecture = Literal["cnn", "mobilenetv2", "efficientnetb0", "resnet50"]
Strategy = Literal["none", "mirrored", "multiworker"]
ResizeMethod = Literal["bilinear", "nearest", "bicubic", "area", "lanczos3"]


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split and decoded."""

    data_dir: Path
    image_size: int = 32
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    resize_method: ResizeMethod = "bilinear"
    strict: bool = False  # fail on an unreadable file instead of skipping it
    seed: int = 1337


@dataclass(frozen=True)
class AugmentConfig:
    """Keras preprocessing layers applied during fitting only (0 / "none" disables one)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = 0.05
    zoom: float = 0.1
    translation: float = 0.1
    contrast: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build."""

    architecture: Architecture = "cnn"
    weights: str = "none"  # none | imagenet | path to a backbone .h5
    fine_tune_layers: int = 20
    dropout: float = 0.2
    cnn_width: int = 16  # filters of the small cnn's first stage (then x2, x4); backbones ignore it


@dataclass(frozen=True)
class FitConfig:
    """Optimisation, callbacks, checkpoints and distribution."""

    work_dir: Path = Path("build/training")
    epochs: int = 30
    fine_tune_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 6
    monitor: str = "val_loss"
    resume: bool = False
    quiet: bool = False
    strategy: Strategy = "none"
    seed: int = 1337


@dataclass(frozen=True)
class CalibrationConfig:
    """Per-class thresholds whose lower confidence bound of precision (or recall) reaches ``target``.

    ``folds`` >= 2: calibrate on out-of-fold predictions over train+val from that many extra
    models (cross-fitting); 0: on the validation split only.
    """

    policy: Literal["precision", "recall"] = "precision"
    target: float = 0.95
    confidence: float = 0.95
    folds: int = 5


@dataclass(frozen=True)
class ExportConfig:
    """Where and how the version folder is published."""

    name: str
    out_dir: Path
    opset: int = 17
    parity_tolerance: float = 1e-5
    parity_batch: int = 32
    min_test_accuracy: float | None = None  # None: clearly above chance (training.gate)


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return str(value) if isinstance(value, Path) else value
