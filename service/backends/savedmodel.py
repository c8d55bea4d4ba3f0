"""TensorFlow SavedModel backend (``serving_default`` signature). Imports TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.metadata import ModelMetadata
from service.backends._tf import import_tensorflow


class SavedModelBackend:
    def __init__(self, path: Path, meta: ModelMetadata) -> None:
        tf = import_tensorflow()
        self._tf = tf
        self._model = tf.saved_model.load(str(path))
        self._fn = self._model.signatures["serving_default"]
        self._input = self._signature_input(meta.input.name)
        self._output = meta.output.name
        self.device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"

    def _signature_input(self, wanted: str) -> str:
        names = list(self._fn.structured_input_signature[1])
        return wanted if wanted in names else names[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self._fn(**{self._input: self._tf.constant(batch)})
        tensor = out[self._output] if self._output in out else next(iter(out.values()))
        return tensor.numpy()

    def close(self) -> None:
        self._fn = None
        self._model = None
