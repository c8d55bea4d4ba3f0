"""One class per artifact format: load, run a batch, report the device actually used.

Each backend module imports its framework lazily, so importing this package (and serving ONNX)
never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from contract.metadata import ModelMetadata
from service.settings import Settings


class Backend(Protocol):
    """A loaded model: ``run`` takes float32 ``[N, H, W, C]`` and returns ``[N, classes]``."""

    device: str  # the execution provider / device actually active

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def load_backend(kind: str, version_dir: Path, meta: ModelMetadata, settings: Settings) -> Backend:
    """Create the backend for ``kind`` from the artifact named in ``meta`` (blocking; call in a thread)."""
    path = version_dir / meta.artifacts[kind].path  # type: ignore[index]
    if kind == "onnx":
        from service.backends.onnx import OnnxBackend

        return OnnxBackend(path, meta, settings)
    if kind == "savedmodel":
        from service.backends.savedmodel import SavedModelBackend

        return SavedModelBackend(path, meta)
    if kind == "keras_h5":
        from service.backends.keras_h5 import KerasH5Backend

        return KerasH5Backend(path, meta)
    raise ValueError(f"unknown backend {kind!r}")
