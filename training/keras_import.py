"""Keras sources of ``import``: a tf-keras (Keras 2) model or a Keras 3 model, made ready to publish.

What is read from the model (input shape, pixel range, logits or probabilities) is read the same
way from both: through ``inputs``/``outputs`` shapes and layer class names, which tf-keras and
Keras 3 share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.config import ExportConfig, ImportConfig, InputShape
from training.errors import ImportModelError
from training.import_source import (
    INPUT_RANGES,
    PIXEL_PREPROCESSING,
    Prepared,
    max_abs_diffs,
    onnx_outputs,
)
from training.models import INPUT_NAME, OUTPUT_NAME


def _shape_of(tensor: Any) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def input_shape(model: Any, cfg: ImportConfig) -> InputShape:
    """H x W x C from the model, or from the flags where the model leaves them open."""
    if not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        raise ImportModelError(
            "the model has no fixed inputs and outputs (a subclassed model?): save it as a "
            "functional or Sequential model"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ImportModelError("the model must have exactly one input and one output")
    shape = _shape_of(model.inputs[0])
    if len(shape) != 4:
        raise ImportModelError(f"the model's input {shape} is not an image batch [N, H, W, C]")
    _, height, width, channels = shape
    wanted = {1: "grayscale", 3: "rgb"}
    if channels is None and cfg.color_mode is None:
        raise ImportModelError("the model accepts any channel count: give --color-mode")
    channels = channels or (1 if cfg.color_mode == "grayscale" else 3)
    if channels not in wanted or (cfg.color_mode and wanted[channels] != cfg.color_mode):
        raise ImportModelError(
            f"the model takes {channels} channel(s); --color-mode {cfg.color_mode} does not fit"
            if cfg.color_mode
            else f"the model takes {channels} channels; Visor serves 1 (grayscale) or 3 (rgb)"
        )
    if cfg.image_size is not None:
        if (height or cfg.image_size[0], width or cfg.image_size[1]) != cfg.image_size:
            raise ImportModelError(
                f"the model takes {height}x{width} images; --image-size "
                f"{cfg.image_size[0]}x{cfg.image_size[1]} does not fit"
            )
        height, width = cfg.image_size
    if height is None or width is None:
        raise ImportModelError("the model accepts any image size: give --image-size HxW")
    return InputShape(height, width, channels)


def output_classes(model: Any, labels: list[str], labels_path: Path) -> None:
    classes = _shape_of(model.outputs[0])[-1]
    if classes != len(labels):
        raise ImportModelError(
            f"the model has {classes} outputs but {labels_path} lists {len(labels)} labels"
        )


def _flat_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def takes_raw_pixels(model: Any) -> bool:
    """Whether pixel preprocessing (Rescaling/Normalization) comes before any weights."""
    for layer in _flat_layers(model):
        if type(layer).__name__ in PIXEL_PREPROCESSING:
            return True
        if layer.weights:
            return False
    return False


def input_range(model: Any, given: str | None) -> tuple[tuple[float, float], str]:
    """The pixel range the model was trained on, and where that came from."""
    if given is not None:
        return INPUT_RANGES[given], "--input-range"
    if takes_raw_pixels(model):
        return INPUT_RANGES["0,255"], "the model's own Rescaling/Normalization layer"
    raise ImportModelError(
        "cannot tell which pixel range the model expects (no Rescaling or Normalization layer "
        "at its input): give --input-range 0,255|0,1|-1,1"
    )


def outputs_logits(model: Any) -> bool:
    """True unless the last layer ends in softmax or sigmoid."""
    last = _flat_layers(model)[-1]
    if type(last).__name__ == "Softmax":
        return False
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "linear") not in ("softmax", "sigmoid")


def serving_model(model: Any, shape: InputShape, pixel_range: tuple[float, float], logits: bool):
    """tf-keras: raw pixels 0..255 ``[N, H, W, C]`` → probabilities, around the user's model."""
    import tf_keras as keras

    inputs = keras.Input((shape.height, shape.width, shape.channels), name=INPUT_NAME)
    low, high = pixel_range
    x = inputs
    if (low, high) != INPUT_RANGES["0,255"]:
        x = keras.layers.Rescaling((high - low) / 255.0, offset=low, name="to_model_range")(x)
    x = model(x, training=False)
    outputs = keras.layers.Activation(
        "softmax" if logits else "linear", dtype="float32", name=OUTPUT_NAME
    )(x)
    return keras.Model(inputs, outputs, name=f"imported_{model.name}")


def _common(model: Any, cfg: ImportConfig, labels: list[str]) -> tuple:
    shape = input_shape(model, cfg)
    output_classes(model, labels, cfg.labels_path)
    pixel_range, range_source = input_range(model, cfg.input_range)
    logits = outputs_logits(model)
    record = {
        "input_range": list(pixel_range),
        "input_range_from": range_source,
        "logits_softmaxed": logits,
    }
    return shape, pixel_range, logits, record


def prepare_keras2(cfg: ImportConfig, labels: list[str], export: ExportConfig) -> Prepared:
    """A tf-keras model: wrapped in Keras, exported and checked as ``train`` does."""
    from training.export import check_parity, write_artifacts
    from training.keras_source import load_keras_model

    user_model, source = load_keras_model(cfg.model_path)
    shape, pixel_range, logits, record = _common(user_model, cfg, labels)
    model = serving_model(user_model, shape, pixel_range, logits)
    return Prepared(
        shape=shape,
        predict=lambda pixels: model.predict(pixels, verbose=0, batch_size=256),
        write=lambda tmp: write_artifacts(model, tmp, cfg.opset),
        parity=lambda tmp, batch: check_parity(model, tmp, batch, export.parity_tolerance),
        opset=cfg.opset,
        record={**source, **record},
    )


def prepare_keras3(cfg: ImportConfig, labels: list[str], export: ExportConfig) -> Prepared:
    """A Keras 3 model: loaded with Keras 3, one serving function exported twice."""
    from training.keras3_source import (
        keras3_predict,
        load_keras3_model,
        savedmodel_outputs,
        serving_function,
        write_keras3_artifacts,
    )

    user_model, source = load_keras3_model(cfg.model_path)
    shape, pixel_range, logits, record = _common(user_model, cfg, labels)
    dims = (shape.height, shape.width, shape.channels)
    serve, spec = serving_function(user_model, dims, pixel_range, logits)
    predict = keras3_predict(user_model, pixel_range, logits)

    def parity(tmp: Path, batch: np.ndarray) -> dict[str, float]:
        outputs = {"onnx": onnx_outputs(tmp, batch), "savedmodel": savedmodel_outputs(tmp, batch)}
        return max_abs_diffs(predict(batch), outputs, export.parity_tolerance, "Keras 3")

    return Prepared(
        shape=shape,
        predict=predict,
        write=lambda tmp: write_keras3_artifacts(serve, spec, user_model, tmp, cfg.opset),
        parity=parity,
        opset=cfg.opset,
        record={**source, **record},
    )
