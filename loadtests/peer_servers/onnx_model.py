"""The model every peer serves: the version folder's ONNX file, fed as the raw ORT limit is.

Imported by the peer servers inside their own virtual environments (numpy + onnxruntime only,
nothing from Visor). The input is the UINT8 ``[N, H, W, C]`` tensor the load client sends; the
scaling lives inside the graph (metadata ``value_range`` [0, 255]), so the only preprocessing is
the float32 cast that ``loadtests.raw_ort`` does too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class OnnxModel:
    """One ``InferenceSession`` with ONNX Runtime's default options (what a user would write)."""

    def __init__(self, version_dir: Path) -> None:
        import onnxruntime as ort

        meta = json.loads((version_dir / "metadata.json").read_text())
        self.input_name: str = meta["input"]["name"]
        self.output_name: str = meta["output"]["name"]
        self.shape = (meta["input"]["height"], meta["input"]["width"], meta["input"]["channels"])
        path = version_dir / meta["artifacts"]["onnx"]["path"]
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """UINT8 ``[N, H, W, C]`` -> FP32 probabilities ``[N, classes]``."""
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]
