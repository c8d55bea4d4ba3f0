"""Export SavedModel + HDF5 + ONNX, verify parity, write metadata, publish atomically."""

from __future__ import annotations

import logging
import os
import platform
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
import tf_keras as keras

from contract.golden import write_golden
from contract.metadata import (
    METADATA_FILE,
    Artifact,
    Golden,
    InputSpec,
    ModelMetadata,
    OutputSpec,
    ParityCheck,
    sha256_path,
)
from training.config import ExportConfig
from training.errors import ParityFailed
from training.models import INPUT_NAME, OUTPUT_NAME
from training.parity import ParityTolerance, compare, round_up
from training.staging import make_readable, make_staging, remove_stale

log = logging.getLogger(__name__)
ARTIFACTS = {"onnx": "model.onnx", "savedmodel": "saved_model", "keras_h5": "model.h5"}
# A few inputs are enough to catch damaged weights (they move every output) and keep the
# file small for large inputs. The tolerance leaves room for a GPU provider's arithmetic
# (TF32, fused kernels) while damaged weights move probabilities by far more.
GOLDEN_INPUTS = 8
GOLDEN_TOLERANCE = 1e-3


def _signature(model: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)


def write_artifacts(model: keras.Model, folder: Path, opset: int) -> None:
    """model.h5, saved_model/ (serving_default: image -> probabilities) and model.onnx."""
    spec = _signature(model)
    model.save(folder / ARTIFACTS["keras_h5"], include_optimizer=False)

    @tf.function(input_signature=[spec])
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(image, training=False)}

    model.save(
        folder / ARTIFACTS["savedmodel"],
        save_format="tf",
        include_optimizer=False,
        signatures={"serving_default": serve},
        # No per-layer traced functions: the serving signature is all serving needs, Keras
        # reloads built-in layers from their config, and saving a backbone gets much faster.
        save_traces=False,
    )
    tf2onnx.convert.from_keras(
        model, input_signature=(spec,), opset=opset, output_path=str(folder / ARTIFACTS["onnx"])
    )


def _onnx_runner(folder: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str, str]:
    session = ort.InferenceSession(
        str(folder / ARTIFACTS["onnx"]), providers=["CPUExecutionProvider"]
    )
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    return (lambda x: session.run([out], {inp: x})[0]), inp, out


def artifact_outputs(folder: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Each artifact of ``folder``, reloaded as serving would, run on ``batch``."""
    onnx_run, _, _ = _onnx_runner(folder)
    serving = tf.saved_model.load(str(folder / ARTIFACTS["savedmodel"])).signatures[
        "serving_default"
    ]
    h5 = keras.models.load_model(folder / ARTIFACTS["keras_h5"], compile=False)
    return {
        "onnx": onnx_run(batch),
        "savedmodel": serving(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME].numpy(),
        "keras_h5": h5.predict(batch, verbose=0),
    }


def verify_parity(
    model: keras.Model, folder: Path, batch: np.ndarray, tolerance: ParityTolerance
) -> tuple[dict[str, float], ParityCheck]:
    """Every artifact against ``model`` per training/parity.py; ExportError naming the failures.

    Returns the max abs difference per artifact and the check as recorded in the metadata.
    """
    expected = model.predict(batch, verbose=0)
    results = {
        kind: compare(expected, out, tolerance)
        for kind, out in artifact_outputs(folder, batch).items()
    }
    bad = {kind: r for kind, r in results.items() if not r.ok}
    if bad:
        worst = max(r.needed_rtol for r in bad.values())
        detail = ", ".join(
            f"{kind}: max abs diff {r.max_abs_diff:.3g} (within rtol {r.needed_rtol:.3g} at "
            f"this atol), {r.top1_mismatches} top-1 label(s) changed"
            for kind, r in bad.items()
        )
        raise ParityFailed(
            f"export parity failed (|p_artifact - p_keras| <= {tolerance.atol:g} + "
            f"{tolerance.rtol:g} * |p_keras| and the same top-1 label, on {len(batch)} test "
            f"images): {detail}",
            suggested_rtol=round_up(worst)
            if all(r.top1_mismatches == 0 for r in bad.values())
            else None,
        )
    check = ParityCheck(
        atol=tolerance.atol,
        rtol=tolerance.rtol,
        images=len(batch),
        top1_agreement={kind: r.top1_agreement for kind, r in results.items()},
    )
    return {kind: r.max_abs_diff for kind, r in results.items()}, check


def check_parity(
    model: keras.Model, folder: Path, batch: np.ndarray, tolerance: ParityTolerance
) -> dict[str, float]:
    """:func:`verify_parity`'s max abs difference per artifact."""
    return verify_parity(model, folder, batch, tolerance)[0]


def export_golden(folder: Path, batch: np.ndarray) -> Golden:
    """Store a few inputs and the exported ONNX model's outputs for the server's load check."""
    onnx_run, _, _ = _onnx_runner(folder)
    inputs = np.ascontiguousarray(batch[:GOLDEN_INPUTS], dtype=np.float32)
    return write_golden(folder, inputs, onnx_run(inputs), GOLDEN_TOLERANCE)


def io_specs(
    folder: Path, model: keras.Model, color_mode: str, resize_method: str
) -> tuple[InputSpec, OutputSpec]:
    """Input/output specs with the tensor names actually present in the ONNX graph."""
    _, inp, out = _onnx_runner(folder)
    _, height, width, channels = model.input_shape
    return (
        InputSpec(
            name=inp,
            height=height,
            width=width,
            channels=channels,
            color_mode=color_mode,
            resize_method=resize_method,
        ),
        OutputSpec(name=out, kind="probabilities"),
    )


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and int(p.name) > 0]
    return max(versions, default=0) + 1


def checksums(folder: Path) -> dict[str, Artifact]:
    return {
        kind: Artifact(path=rel, sha256=sha256_path(folder / rel))
        for kind, rel in ARTIFACTS.items()
    }


def publish(
    cfg: ExportConfig,
    fill: Callable[[Path], dict],
    finish: Callable[[Path, int], ModelMetadata],
) -> Path:
    """Build a version in ``out/NAME/.tmp-*`` and rename it to the next free version number.

    ``fill(tmp)`` writes the artifacts; ``finish(tmp, version)`` returns the metadata for that
    version. Any exception removes the temporary folder, so no version folder ever appears half
    written (the service ignores names that are not positive integers); staging folders left by
    a killed publisher are removed first (training/staging.py).
    """
    if isinstance(cfg.out_dir, str):
        from training.publish_remote import publish_remote

        return publish_remote(cfg.out_dir, cfg.name, fill, finish)  # type: ignore[return-value]
    model_dir = cfg.out_dir / cfg.name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(model_dir)
    tmp = make_staging(model_dir)
    try:
        fill(tmp)
        while True:
            version = next_version(model_dir)
            metadata = finish(tmp, version)
            (tmp / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
            make_readable(tmp)  # Mkdtemp made it 0700; servers may run as another user
            target = model_dir / str(version)
            if target.exists():
                continue
            try:
                # Rename is atomic; it fails (ENOTEMPTY/EEXIST) if a concurrent publisher
                # took this number first (publishers never create empty version folders).
                os.rename(tmp, target)
            except OSError:
                if target.exists():
                    continue
                raise
            log.info("published %s", target)
            return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def created_now() -> datetime:
    return datetime.now(UTC)


def framework_versions() -> dict[str, str]:
    """The versions of what made the artifacts, recorded in their metadata."""
    import onnxruntime
    import sklearn
    import tensorflow as tf
    import tf2onnx
    import tf_keras

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }
