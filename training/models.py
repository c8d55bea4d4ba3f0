"""Model builders. Every model takes raw pixels (float32 0..255) and outputs softmax probabilities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tf_keras as keras

from training.config import ModelConfig
from training.weights import resolve_weights

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
BASE_NAME = "backbone"
POOL_NAME = "pooled_features"
MIN_BACKBONE_SIZE = 32
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    factory: Callable[..., keras.Model]
    preprocess: str  # "tf" (-1..1), "caffe" (BGR, mean-subtracted) or "raw" (model normalises)


BACKBONES: dict[str, Backbone] = {
    "mobilenetv2": Backbone(keras.applications.MobileNetV2, "tf"),
    "efficientnetb0": Backbone(keras.applications.EfficientNetB0, "raw"),
    "resnet50": Backbone(keras.applications.ResNet50, "caffe"),
}


def _small_cnn(x, num_classes: int, dropout: float, width: int):
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    for filters in (width, 2 * width):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            # Momentum 0.9 (not 0.99): small data sets give few steps, and slow moving
            # statistics made validation predict one class for the first epochs.
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(padding="same")(x)
    x = keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.layers.Dense(num_classes, name="logits")(x)


def _to_backbone_input(x, channels: int, size: int, preprocess: str):
    """Resize (if below the backbone minimum), expand gray to 3 channels, normalise; all in-graph."""
    if size < MIN_BACKBONE_SIZE:
        x = keras.layers.Resizing(MIN_BACKBONE_SIZE, MIN_BACKBONE_SIZE, name="resize")(x)
    if preprocess == "tf":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(x)
    if channels == 1 or preprocess == "caffe":
        # A frozen 1x1 convolution does gray->RGB and RGB->BGR-minus-mean with built-in
        # layers only, so HDF5/SavedModel/ONNX all load without custom objects.
        order = [2, 1, 0] if preprocess == "caffe" else [0, 1, 2]
        kernel = np.zeros((1, 1, channels, 3), np.float32)
        for out, src in enumerate(order):
            kernel[0, 0, 0 if channels == 1 else src, out] = 1.0
        bias = (
            -np.asarray(CAFFE_MEAN_BGR, np.float32)
            if preprocess == "caffe"
            else np.zeros(3, np.float32)
        )
        conv = keras.layers.Conv2D(3, 1, trainable=False, name="to_backbone_channels")
        x = conv(x)
        conv.set_weights([kernel, bias])
    return x


def is_transfer(cfg: ModelConfig) -> bool:
    """A backbone that starts from given weights: frozen first, then partly fine-tuned."""
    return cfg.architecture != "cnn" and cfg.weights != "none"


def _from_scratch(base: keras.Model) -> None:
    """Random weights: the whole backbone learns, BatchNorm included (in training mode).

    NOTE: momentum 0.9 for the same reason as the small cnn: with few steps, the applications'
    0.99 leaves moving statistics near their initial values and validation near chance.
    """
    base.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9


def build_model(
    cfg: ModelConfig, num_classes: int, size: int, channels: int, load_weights: bool = True
) -> keras.Model:
    """Raw pixels ``[N,size,size,channels]`` -> probabilities.

    Transfer bases start frozen; ``--weights none`` bases train whole. ``load_weights=False``
    builds the same graph without reading the weight file (the caller loads trained weights).
    """
    inputs = keras.Input((size, size, channels), name=INPUT_NAME, dtype="float32")
    if cfg.architecture == "cnn":
        logits = _small_cnn(inputs, num_classes, cfg.dropout, cfg.cnn_width)
    else:
        spec = BACKBONES[cfg.architecture]
        weights = resolve_weights(cfg, size) if load_weights else None
        x = _to_backbone_input(inputs, channels, size, spec.preprocess)
        base_size = max(size, MIN_BACKBONE_SIZE)
        base = spec.factory(
            include_top=False, weights=weights, input_shape=(base_size, base_size, 3)
        )
        base._name = BASE_NAME  # A stable name lets unfreeze() find it in any backbone.
        if is_transfer(cfg):
            base.trainable = False
            # BatchNorm stays in inference mode, also when unfrozen (keras-io's recipe).
            x = base(x, training=False)
        else:
            _from_scratch(base)
            x = base(x)
        x = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
        return keras.Model(
            inputs, classifier_head(x, num_classes, cfg.dropout), name=f"visor_{cfg.architecture}"
        )
    outputs = keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME)(logits)
    return keras.Model(inputs, outputs, name=f"visor_{cfg.architecture}")


def classifier_head(features, num_classes: int, dropout: float):
    """A backbone's pooled features -> probabilities (dropout, dense, softmax)."""
    x = keras.layers.Dropout(dropout)(features)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME)(logits)


def has_backbone(model: keras.Model) -> bool:
    return any(layer.name == BASE_NAME for layer in model.layers)


def unfreeze(model: keras.Model, n_layers: int) -> None:
    """Make the top ``n_layers`` of the backbone trainable; BatchNorm layers stay frozen."""
    base = model.get_layer(BASE_NAME)
    base.trainable = True
    cut = max(0, len(base.layers) - n_layers)
    for i, layer in enumerate(base.layers):
        frozen = i < cut or isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = not frozen


def with_augmentation(model: keras.Model, augmentation: keras.Sequential | None) -> keras.Model:
    """The model that is fitted: augmentation (training only) followed by the inference model."""
    if augmentation is None:
        return model
    inputs = keras.Input(model.input_shape[1:], name=INPUT_NAME, dtype="float32")
    return keras.Model(inputs, model(augmentation(inputs)), name="fit_model")
