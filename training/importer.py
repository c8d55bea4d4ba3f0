"""``python -m training import``: serve a model that ``train`` did not produce.

Three kinds of source, one published form: the model takes raw pixels 0..255 ``[N, H, W, C]``
and answers probabilities, like every Visor model.

- A Keras 2 (tf-keras) model is wrapped in Keras (a Rescaling layer to the range it was trained
  on, a softmax when it outputs logits); export and parity are those of ``train``
  (training/export.py): SavedModel, HDF5 and ONNX.
- A Keras 3 model is loaded with Keras 3 and wrapped in a ``tf.function`` that becomes the
  SavedModel's signature and the ONNX graph (training/keras3_source.py); parity is against
  Keras 3's own predictions.
- An ONNX classifier from any framework gets its preprocessing (layout, range, mean/std) and a
  softmax put into the graph (training/onnx_import.py); parity is against the original graph on
  pixels preprocessed in NumPy. ONNX is then the only artifact.

With labelled calibration data the thresholds are calibrated and the metrics measured as
``train`` does, on two disjoint halves; without, the thresholds are a fixed value and say they
are uncalibrated. Every published version carries golden outputs for the server's load check.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from contract.metadata import (
    Artifact,
    InputSpec,
    ModelMetadata,
    OutputSpec,
    TestMetrics,
    Thresholds,
    sha256_path,
)
from training.config import ExportConfig, ImportConfig, InputShape
from training.errors import ImportModelError
from training.import_source import ARTIFACT_PATHS, Prepared

log = logging.getLogger(__name__)


def read_labels(path: Path) -> list[str]:
    """One label per line, in the order of the model's outputs (blank lines ignored)."""
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) < 2:
        raise ImportModelError(f"{path} lists {len(labels)} label(s); a classifier needs >= 2")
    if len(set(labels)) != len(labels):
        raise ImportModelError(f"{path} lists a label more than once")
    return labels


def io_specs(folder: Path, shape: InputShape, resize_method: str) -> tuple[InputSpec, OutputSpec]:
    """Input/output specs with the tensor names actually present in the ONNX graph."""
    import onnx

    graph = onnx.load(str(folder / ARTIFACT_PATHS["onnx"]), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    image = next(i.name for i in graph.input if i.name not in initializers)
    spec = InputSpec(
        name=image,
        height=shape.height,
        width=shape.width,
        channels=shape.channels,
        color_mode=shape.color_mode,
        resize_method=resize_method,
    )
    return spec, OutputSpec(name=graph.output[0].name, kind="probabilities")


def checksums(folder: Path) -> dict[str, Artifact]:
    """sha256 of the artifacts this import wrote (an ONNX import writes only model.onnx)."""
    return {
        kind: Artifact(path=rel, sha256=sha256_path(folder / rel))
        for kind, rel in ARTIFACT_PATHS.items()
        if (folder / rel).exists()
    }


def prepare(cfg: ImportConfig, labels: list[str], export: ExportConfig) -> Prepared:
    """The source by its kind: ONNX, Keras 3, or Keras 2 (tf-keras)."""
    if cfg.model_path.suffix.lower() == ".onnx":
        from training.onnx_import import prepare_onnx

        return prepare_onnx(cfg, labels, export)
    from training.keras3_source import is_keras3_file
    from training.keras_import import prepare_keras2, prepare_keras3
    from training.keras_source import source_format

    if not cfg.model_path.exists():
        raise ImportModelError(f"{cfg.model_path} does not exist")
    source_format(cfg.model_path)  # an unknown suffix is refused before anything loads
    if is_keras3_file(cfg.model_path):
        return prepare_keras3(cfg, labels, export)
    return prepare_keras2(cfg, labels, export)


def run_import(cfg: ImportConfig) -> Path:
    """Prepare, (calibrate,) export, check parity and publish ``OUT/NAME/<next version>/``."""
    from training.calibration_data import calibrate_on_folder, fixed_thresholds
    from training.export import created_now, export_golden, framework_versions, publish

    if isinstance(cfg.out_dir, str):
        from training.publish_remote import check_writable

        check_writable(cfg.out_dir)  # refused credentials fail before the export, not after
    labels = read_labels(cfg.labels_path)
    export = ExportConfig(name=cfg.name, out_dir=cfg.out_dir, opset=cfg.opset)
    source = prepare(cfg, labels, export)
    shape = source.shape
    log.info(
        "importing %s (%s): %dx%dx%d, pixels %s..%s (%s)%s",
        cfg.model_path,
        source.record["format"],
        shape.height,
        shape.width,
        shape.channels,
        *source.record["input_range"],
        source.record["input_range_from"],
        ", logits: softmax added" if source.record["logits_softmaxed"] else "",
    )
    thresholds: Thresholds = fixed_thresholds(labels, cfg.threshold)
    metrics: TestMetrics | None = None
    calibration: dict = {}
    if cfg.calibration_data is not None:
        thresholds, metrics, sample, calibration = calibrate_on_folder(
            source.predict, cfg, labels, shape
        )
    else:
        rng = np.random.default_rng(cfg.seed)
        size = (export.parity_batch, shape.height, shape.width, shape.channels)
        sample = rng.integers(0, 256, size).astype(np.float32)
    parity: dict[str, float] = {}
    golden: list = []

    def fill(tmp: Path) -> None:
        source.write(tmp)
        batch = np.ascontiguousarray(sample[: export.parity_batch], dtype=np.float32)
        parity.update(source.parity(tmp, batch))
        # As train does: the server re-runs these at load and refuses a version whose
        # outputs moved (a corrupted artifact with a matching checksum).
        golden.append(export_golden(tmp, batch))

    def finish(tmp: Path, version: int) -> ModelMetadata:
        input_spec, output_spec = io_specs(tmp, shape, cfg.resize_method)
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
            onnx_opset=source.opset,
            parity=parity,
            golden=golden[0],
            frameworks=framework_versions(),
            training={
                "imported": {
                    "source": str(cfg.model_path),
                    **source.record,
                    "parity_tolerance": {
                        "atol": export.parity_atol,
                        "rtol": export.parity_rtol,
                    },
                    **calibration,
                }
            },
        )

    return publish(export, fill, finish)
