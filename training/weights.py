"""Backbone weight files: resolved locally before TensorFlow is imported (fail fast, never download)."""

from __future__ import annotations

import os
from pathlib import Path

from training.config import ModelConfig
from training.errors import WeightsError


def _mobilenet_file(size: int) -> str:
    # Keras picks the 224 file for sizes it has no weights for (with a warning).
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


def imagenet_file(architecture: str, size: int) -> str:
    """The file name Keras caches ImageNet no-top weights under."""
    if architecture == "mobilenetv2":
        return _mobilenet_file(size)
    if architecture == "efficientnetb0":
        return "efficientnetb0_notop.h5"
    return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def resolve_weights(cfg: ModelConfig, size: int) -> str | None:
    """None, or a local .h5 path. ``imagenet`` must already be in the Keras cache."""
    if cfg.weights == "none":
        return None
    if cfg.architecture == "cnn":
        raise WeightsError(
            "--weights applies to transfer backbones only; the cnn starts from scratch"
        )
    if cfg.weights == "imagenet":
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        path = cache / imagenet_file(cfg.architecture, size)
        if not path.is_file():
            raise WeightsError(
                f"imagenet weights for {cfg.architecture} are not in the Keras cache ({path}); "
                "Visor never downloads: copy the file there, pass --weights PATH.h5, or --weights none"
            )
        return str(path)
    if not Path(cfg.weights).is_file():
        raise WeightsError(
            f"--weights {cfg.weights}: no such file (expected none, imagenet or a .h5)"
        )
    return cfg.weights
