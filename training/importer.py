"""``python -m training import``: serve a Keras model that ``train`` did not produce.

The user's model is wrapped so the published one takes raw pixels 0..255 like every Visor model
(a Rescaling layer to the range it was trained on, and a softmax when it outputs logits), then
export, parity check and atomic publish are those of ``train`` (training/export.py). With labelled
calibration data the thresholds are calibrated and the metrics measured as ``train`` does, on two
disjoint halves; without, the thresholds are a fixed value and say they are uncalibrated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tf_keras as keras

from contract.metadata import ModelMetadata, TestMetrics, Thresholds
from training.config import ExportConfig, ImportConfig, InputShape
from training.errors import ImportModelError
from training.keras_source import load_keras_model
from training.models import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)
INPUT_RANGES: dict[str, tuple[float, float]] = {
    "0,255": (0.0, 255.0),
    "0,1": (0.0, 1.0),
    "-1,1": (-1.0, 1.0),
}
# Layers that turn raw pixels into a network's range; one of them before the first layer
# with weights means the model already takes 0..255.
PIXEL_PREPROCESSING = (keras.layers.Rescaling, keras.layers.Normalization)


def read_labels(path: Path) -> list[str]:
    """One label per line, in the order of the model's outputs (blank lines ignored)."""
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) < 2:
        raise ImportModelError(f"{path} lists {len(labels)} label(s); a classifier needs >= 2")
    if len(set(labels)) != len(labels):
        raise ImportModelError(f"{path} lists a label more than once")
    return labels


def input_shape(model: keras.Model, cfg: ImportConfig) -> InputShape:
    """H x W x C from the model, or from the flags where the model leaves them open."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ImportModelError("the model must have exactly one input and one output")
    shape = model.input_shape
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


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def takes_raw_pixels(model: keras.Model) -> bool:
    """Whether pixel preprocessing (Rescaling/Normalization) comes before any weights."""
    for layer in _flat_layers(model):
        if isinstance(layer, PIXEL_PREPROCESSING):
            return True
        if layer.weights:
            return False
    return False


def input_range(model: keras.Model, given: str | None) -> tuple[tuple[float, float], str]:
    """The pixel range the model was trained on, and where that came from."""
    if given is not None:
        return INPUT_RANGES[given], "--input-range"
    if takes_raw_pixels(model):
        return INPUT_RANGES["0,255"], "the model's own Rescaling/Normalization layer"
    raise ImportModelError(
        "cannot tell which pixel range the model expects (no Rescaling or Normalization layer "
        "at its input): give --input-range 0,255|0,1|-1,1"
    )


def outputs_logits(model: keras.Model) -> bool:
    """True unless the last layer ends in softmax or sigmoid."""
    last = _flat_layers(model)[-1]
    if isinstance(last, keras.layers.Softmax):
        return False
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "linear") not in ("softmax", "sigmoid")


def serving_model(
    model: keras.Model, shape: InputShape, pixel_range: tuple[float, float], logits: bool
) -> keras.Model:
    """Raw pixels 0..255 ``[N, H, W, C]`` → probabilities, around the user's model."""
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


def run_import(cfg: ImportConfig) -> Path:
    """Wrap, (calibrate,) export, check parity and publish ``OUT/NAME/<next version>/``."""
    from training.calibration_data import calibrate_on_folder, fixed_thresholds
    from training.export import (
        check_parity,
        checksums,
        created_now,
        export_golden,
        framework_versions,
        io_specs,
        publish,
        write_artifacts,
    )

    if isinstance(cfg.out_dir, str):
        from training.publish_remote import check_writable

        check_writable(cfg.out_dir)  # refused credentials fail before the export, not after
    labels = read_labels(cfg.labels_path)
    user_model, source = load_keras_model(cfg.model_path)
    shape = input_shape(user_model, cfg)
    classes = user_model.output_shape[-1]
    if classes != len(labels):
        raise ImportModelError(
            f"the model has {classes} outputs but {cfg.labels_path} lists {len(labels)} labels"
        )
    pixel_range, range_source = input_range(user_model, cfg.input_range)
    logits = outputs_logits(user_model)
    model = serving_model(user_model, shape, pixel_range, logits)
    log.info(
        "importing %s (%s): %dx%dx%d, pixels %s..%s (%s)%s",
        cfg.model_path,
        source["format"],
        shape.height,
        shape.width,
        shape.channels,
        *pixel_range,
        range_source,
        ", logits: softmax added" if logits else "",
    )
    export = ExportConfig(name=cfg.name, out_dir=cfg.out_dir, opset=cfg.opset)
    thresholds: Thresholds = fixed_thresholds(labels, cfg.threshold)
    metrics: TestMetrics | None = None
    calibration: dict = {}
    if cfg.calibration_data is not None:
        thresholds, metrics, sample, calibration = calibrate_on_folder(model, cfg, labels, shape)
    else:
        rng = np.random.default_rng(cfg.seed)
        size = (export.parity_batch, shape.height, shape.width, shape.channels)
        sample = rng.integers(0, 256, size).astype(np.float32)
    parity: dict[str, float] = {}
    golden: list = []

    def fill(tmp: Path) -> None:
        write_artifacts(model, tmp, cfg.opset)
        batch = sample[: export.parity_batch]
        parity.update(check_parity(model, tmp, batch, export.parity_tolerance))
        # As train does: the server re-runs these at load and refuses a version whose
        # outputs moved (a corrupted artifact with a matching checksum).
        golden.append(export_golden(tmp, batch))

    def finish(tmp: Path, version: int) -> ModelMetadata:
        input_spec, output_spec = io_specs(tmp, model, shape.color_mode, cfg.resize_method)
        return ModelMetadata(
            name=cfg.name,
            version=version,
            created=created_now(),
            labels=labels,
            input=input_spec,
            output=output_spec,
            thresholds=thresholds,
            metrics=metrics,
            artifacts=checksums(tmp),
            onnx_opset=cfg.opset,
            parity=parity,
            golden=golden[0],
            frameworks=framework_versions(),
            training={
                "imported": {
                    "source": str(cfg.model_path),
                    **source,
                    "input_range": list(pixel_range),
                    "input_range_from": range_source,
                    "logits_softmaxed": logits,
                    **calibration,
                }
            },
        )

    return publish(export, fill, finish)
