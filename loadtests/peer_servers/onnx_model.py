"""The model every peer serves: the version folder's ONNX file, fed as the raw ORT limit is.

Imported by the peer servers inside their own virtual environments (numpy + onnxruntime only,
nothing from Visor). The input is the UINT8 ``[N, H, W, C]`` tensor the load client sends; the
scaling lives inside the graph (metadata ``value_range`` [0, 255]), so the only preprocessing is
the float32 cast that ``loadtests.raw_ort`` does too.
"""

from __future__ import annotations

import argparse
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


def parse_args(doc: str, *ports: str) -> argparse.Namespace:
    """A peer server's command line: the version folder, the model's name and its ports."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--version-dir", type=Path, required=True)
    p.add_argument("--name", required=True, help="the model name clients ask for")
    for port in ("http", "grpc", *ports):
        p.add_argument(f"--{port}-port", type=int, required=True)
    return p.parse_args()
