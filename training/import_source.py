"""What every source of ``import`` provides (:class:`Prepared`), and the checks they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.config import InputShape
from training.errors import ExportError
from training.parity import ParityTolerance, compare

INPUT_RANGES: dict[str, tuple[float, float]] = {
    "0,255": (0.0, 255.0),
    "0,1": (0.0, 1.0),
    "-1,1": (-1.0, 1.0),
}
# Layers that turn raw pixels into a network's range; one of them before the first layer
# with weights means the model already takes 0..255. Matched by class name, so the same check
# reads tf-keras and Keras 3 models.
PIXEL_PREPROCESSING = frozenset({"Rescaling", "Normalization"})
ARTIFACT_PATHS = {"onnx": "model.onnx", "savedmodel": "saved_model", "keras_h5": "model.h5"}


@dataclass
class Prepared:
    """A source made ready to publish: what it takes, how it answers, how it is written."""

    shape: InputShape
    predict: Callable[[np.ndarray], np.ndarray]  # raw pixels 0..255 -> the source's probabilities
    write: Callable[[Path], None]  # the artifacts, into a staging folder
    parity: Callable[[Path, np.ndarray], dict[str, float]]  # artifact kind -> max abs diff
    opset: int
    record: dict[str, Any] = field(default_factory=dict)  # goes to training.imported


def max_abs_diffs(
    expected: np.ndarray, outputs: dict[str, np.ndarray], tolerance: ParityTolerance, source: str
) -> dict[str, float]:
    """max |p_artifact - p_source| per artifact; ExportError unless each passes the parity rule
    ``train`` applies (training/parity.py): within ``atol + rtol * p`` and the same top-1."""
    results = {kind: compare(expected, out, tolerance) for kind, out in outputs.items()}
    bad = {kind: r for kind, r in results.items() if not r.ok}
    if bad:
        detail = ", ".join(
            f"{kind}: max abs diff {r.max_abs_diff:.3g}, {r.top1_mismatches} top-1 label(s) "
            "changed"
            for kind, r in bad.items()
        )
        raise ExportError(
            f"export parity failed against {source} (|p_artifact - p_source| <= "
            f"{tolerance.atol:g} + {tolerance.rtol:g} * |p_source| and the same top-1 label): "
            f"{detail}"
        )
    return {kind: r.max_abs_diff for kind, r in results.items()}


def onnx_outputs(folder: Path, batch: np.ndarray) -> np.ndarray:
    """The published ONNX model's answer, as the server's CPU provider computes it."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(folder / ARTIFACT_PATHS["onnx"]), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: batch})[0]
