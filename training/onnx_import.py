"""``import`` of an ONNX classifier: flags → preprocessing, the wrapped graph, its parity check.

The graph work is in training/onnx_graph.py; this module makes it a :class:`Prepared` source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from training.config import ExportConfig, ImportConfig
from training.errors import ImportModelError
from training.import_source import (
    ARTIFACT_PATHS,
    INPUT_RANGES,
    Prepared,
    max_abs_diffs,
    onnx_outputs,
)
from training.models import INPUT_NAME, OUTPUT_NAME
from training.onnx_graph import OnnxSource, Preprocessing, read_onnx, reference, wrap


def _classes(source: OnnxSource, labels: list[str], labels_path: Path) -> None:
    if source.classes is not None and source.classes != len(labels):
        raise ImportModelError(
            f"the model has {source.classes} outputs but {labels_path} lists {len(labels)} labels"
        )


def prepare_onnx(cfg: ImportConfig, labels: list[str], export: ExportConfig) -> Prepared:
    """An ONNX classifier: preprocessing and softmax put into its graph; ONNX is the artifact."""
    if cfg.input_range is None:
        raise ImportModelError(
            "an ONNX model does not say which pixel range it was trained on: give --input-range "
            "0,255|0,1|-1,1 (torchvision models: --input-range 0,1 --mean 0.485,0.456,0.406 "
            "--std 0.229,0.224,0.225)"
        )
    source = read_onnx(cfg.model_path, cfg.input_layout, cfg.color_mode, cfg.image_size)  # type: ignore[arg-type]
    _classes(source, labels, cfg.labels_path)
    prep = Preprocessing(source.layout, INPUT_RANGES[cfg.input_range], cfg.mean, cfg.std)
    mean, std = prep.channel_values(source.shape.channels)  # refuses a wrong count early
    logits = not source.outputs_probabilities if cfg.outputs is None else cfg.outputs == "logits"
    wrapped = wrap(source, prep, logits, INPUT_NAME, OUTPUT_NAME)

    def predict(pixels: np.ndarray) -> np.ndarray:
        return reference(source, prep, pixels, logits)

    def write(tmp: Path) -> None:
        onnx.save(wrapped, str(tmp / ARTIFACT_PATHS["onnx"]))

    def parity(tmp: Path, batch: np.ndarray) -> dict[str, float]:
        expected = predict(batch)
        if expected.shape[1] != len(labels):
            raise ImportModelError(
                f"the model answers {expected.shape[1]} scores but {cfg.labels_path} lists "
                f"{len(labels)} labels"
            )
        outputs = {"onnx": onnx_outputs(tmp, batch)}
        return max_abs_diffs(expected, outputs, export.parity_tolerance, "the original graph")

    ends = (
        "graph ends in Softmax/Sigmoid" if source.outputs_probabilities else "graph ends in logits"
    )
    record = {
        "format": "onnx",
        "opset": source.opset,
        "producer": f"{source.model.producer_name} {source.model.producer_version}".strip(),
        "input_layout": source.layout,
        "input_range": list(prep.pixel_range),
        "input_range_from": "--input-range",
        "mean": mean.tolist(),
        "std": std.tolist(),
        "logits_softmaxed": logits,
        "outputs_from": "--outputs" if cfg.outputs else ends,
    }
    return Prepared(source.shape, predict, write, parity, source.opset, record)
