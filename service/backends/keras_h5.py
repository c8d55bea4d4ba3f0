"""Keras HDF5 backend, loaded in safe mode (no arbitrary Lambda bytecode). Imports TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.metadata import ModelMetadata
from service.backends._tf import import_tensorflow


class KerasH5Backend:
    def __init__(self, path: Path, meta: ModelMetadata) -> None:
        tf = import_tensorflow()
        import tf_keras

        self._tf = tf
        # Compile=False: serving needs no optimizer state; safe_mode refuses to
        # deserialise Lambda layers' Python bytecode from a file we did not write.
        self._model = tf_keras.models.load_model(str(path), compile=False, safe_mode=True)
        self.device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(self._tf.constant(batch), training=False))

    def close(self) -> None:
        self._model = None
