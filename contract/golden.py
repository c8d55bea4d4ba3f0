"""Golden check: re-run the inputs stored at export and compare with the stored outputs.

A checksum only proves the files are the ones metadata.json names; a model whose weights were
damaged and whose checksum was rewritten to match would load and answer wrongly. The golden
outputs were computed by the exported ONNX model itself, so any backend of a sound version
reproduces them within the tolerance (export parity already bounds savedmodel/keras_h5 drift).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract.metadata import Golden, sha256_path

GOLDEN_FILE = "golden.npz"


class GoldenMismatch(Exception):
    """The version does not reproduce its golden outputs, or the golden file is unusable."""


def read_golden(version_dir: Path, golden: Golden) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, outputs)`` of the version's golden file, after checking its sha256."""
    path = version_dir / golden.path
    if not path.is_file():
        raise GoldenMismatch(f"golden file {golden.path} is missing")
    digest = sha256_path(path)
    if digest != golden.sha256:
        raise GoldenMismatch(f"sha256 of {golden.path} is {digest}, metadata says {golden.sha256}")
    # Allow_pickle stays off: a golden file holds plain arrays, never objects.
    with np.load(path, allow_pickle=False) as data:
        return data["inputs"].astype(np.float32), data["outputs"].astype(np.float32)


def verify_golden(
    version_dir: Path,
    golden: Golden,
    run: Callable[[np.ndarray], np.ndarray],
    batch_limit: int,
    tolerance: float | None = None,
) -> float:
    """Run the golden inputs through ``run`` in batches of ``batch_limit``; the max abs diff.

    Raises ``GoldenMismatch`` when an output differs by more than ``tolerance`` (default: the
    one stored in ``golden``).
    """
    tolerance = tolerance or golden.tolerance
    inputs, expected = read_golden(version_dir, golden)
    step = max(1, batch_limit)
    got = np.concatenate([run(inputs[i : i + step]) for i in range(0, len(inputs), step)])
    if got.shape != expected.shape:
        raise GoldenMismatch(f"golden outputs have shape {got.shape}, expected {expected.shape}")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    # `not <=` so a NaN output (a typical sign of damaged weights) fails too.
    if not diff <= tolerance:
        wrong = int(np.sum(got.argmax(axis=1) != expected.argmax(axis=1)))
        raise GoldenMismatch(
            f"golden check failed: outputs differ from the ones stored at export by up to "
            f"{diff:.3g} (tolerance {tolerance:g}), top-1 differs on {wrong} of "
            f"{len(inputs)} inputs: the model file is damaged or not the exported one"
        )
    return diff


def write_golden(folder: Path, inputs: np.ndarray, outputs: np.ndarray, tolerance: float) -> Golden:
    """Store ``inputs``/``outputs`` as ``folder/golden.npz``; the metadata entry that names it."""
    path = folder / GOLDEN_FILE
    with path.open("wb") as fh:
        np.savez_compressed(
            fh, inputs=inputs.astype(np.float32), outputs=outputs.astype(np.float32)
        )
    return Golden(path=GOLDEN_FILE, sha256=sha256_path(path), tolerance=tolerance)
