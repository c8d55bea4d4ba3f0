"""Publish a model saved by Keras 3 (``.keras``, or ``.h5`` written by Keras 3) as it is.

tf-keras cannot read Keras 3 files, but Keras 3 itself loads in the same process: it is a
separate package (``keras``) that runs on TensorFlow whatever ``TF_USE_LEGACY_KERAS`` says (that
variable only picks what ``tf.keras`` means). The model is wrapped in a ``tf.function`` that takes
raw pixels 0..255 (rescaled to the model's range, softmax after logits); Keras 3's
``ExportArchive`` writes that function as the SavedModel's ``serving_default`` and tf2onnx
converts the same function to ONNX. There is no HDF5 artifact: a tf-keras HDF5 file cannot hold
a Keras 3 model. Parity is checked against Keras 3's own ``predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import ImportModelError
from training.keras_source import saved_keras_version, source_format
from training.models import INPUT_NAME, OUTPUT_NAME

SAVEDMODEL = "saved_model"
ONNX = "model.onnx"


def is_keras3_file(path: Path) -> bool:
    """Whether ``path`` is a .keras or .h5 file that records Keras 3 as its writer."""
    if path.is_dir() or path.suffix not in (".keras", ".h5", ".hdf5"):
        return False
    version = saved_keras_version(path)
    return bool(version) and str(version).startswith("3")


def load_keras3_model(path: Path) -> tuple[Any, dict[str, str]]:
    """The Keras 3 model and what was read (format, the Keras version that saved it)."""
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else ""
        raise ImportModelError(
            f"{path} could not be loaded with Keras {keras.__version__} ({reason}); a model "
            "with custom layers needs them registered (keras.saving.register_keras_serializable)"
        ) from None
    version = saved_keras_version(path) or ""
    return model, {
        "format": source_format(path),
        "keras_version": version,
        "loaded_with": (f"keras {keras.__version__}"),
    }


def scaled(pixels, pixel_range: tuple[float, float]):
    """Raw pixels 0..255 → the model's range (a tensor or an array)."""
    low, high = pixel_range
    if (low, high) == (0.0, 255.0):
        return pixels
    return pixels * ((high - low) / 255.0) + low


def serving_function(model: Any, shape: tuple[int, int, int], pixel_range, logits: bool):
    """A ``tf.function``: raw pixels ``image`` [N, H, W, C] → ``{probabilities: [N, K]}``."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        out = model(scaled(image, pixel_range), training=False)
        return {OUTPUT_NAME: tf.nn.softmax(out, axis=-1) if logits else tf.identity(out)}

    return serve, spec


def write_keras3_artifacts(serve, spec, model: Any, folder: Path, opset: int) -> None:
    """saved_model/ (serving_default: image → probabilities) and model.onnx, from one function."""
    import keras
    import tf2onnx

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(folder / SAVEDMODEL), verbose=False)
    tf2onnx.convert.from_function(
        serve, input_signature=(spec,), opset=opset, output_path=str(folder / ONNX)
    )


def keras3_predict(model: Any, pixel_range, logits: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Keras 3's own answer on raw pixels: ``predict`` in its range, softmax in NumPy."""

    def predict(pixels: np.ndarray) -> np.ndarray:
        out = np.asarray(model.predict(scaled(pixels, pixel_range), verbose=0, batch_size=256))
        if not logits:
            return out
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return predict


def savedmodel_outputs(folder: Path, batch: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serving = tf.saved_model.load(str(folder / SAVEDMODEL)).signatures["serving_default"]
    return serving(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME].numpy()
