"""An imported model's thresholds: fixed, or calibrated (with metrics) on a labelled folder.

``train`` calibrates on its validation split and measures on its test split. An imported model
comes with one labelled folder, so it is split the same way in two: each class's images are
shuffled (seeded) and halved, the first half calibrates, the second half is held out for the
metrics and for how the chosen thresholds do on unseen images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from contract.imaging import decode_image
from contract.metadata import ClassThreshold, TestMetrics, Thresholds
from training.calibrate import calibrate, with_test_results
from training.config import ImportConfig, InputShape
from training.data import scan_labelled
from training.errors import ImportModelError
from training.evaluate import compute_metrics

if TYPE_CHECKING:
    import tf_keras as keras



def halves(y: np.ndarray, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, held out): every class split in two, seeded."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in range(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = (len(idx) + 1) // 2
        first.append(idx[:cut])
        second.append(idx[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _labelled(cfg: ImportConfig, labels: list[str]) -> tuple[list, np.ndarray]:
    assert cfg.calibration_data is not None
    paths, names = scan_labelled(cfg.calibration_data)
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise ImportModelError(
            f"{cfg.calibration_data} has label folders {unknown} that the labels file lacks"
        )
    y = np.asarray([labels.index(n) for n in names], dtype=np.int64)
    few = [label for c, label in enumerate(labels) if (y == c).sum() < 2]
    if few:
        raise ImportModelError(
            f"{cfg.calibration_data}: labels {few} have fewer than 2 images; each label needs "
            "images to calibrate on and images to measure on"
        )
    return paths, y


def calibrate_on_folder(
    model: keras.Model, cfg: ImportConfig, labels: list[str], shape: InputShape
) -> tuple[Thresholds, TestMetrics, np.ndarray, dict]:
    """Thresholds, held-out metrics, the decoded images (for parity) and a summary."""
    paths, y = _labelled(cfg, labels)
    size = (shape.height, shape.width)
    pixels = np.stack(
        [decode_image(p, shape.color_mode, size, cfg.resize_method) for p in paths]
    ).astype(np.float32)
    probs = model.predict(pixels, verbose=0, batch_size=256)
    cal, held = halves(y, len(labels), cfg.seed)
    thresholds = calibrate(y[cal], probs[cal], labels, cfg.policy, cfg.target)
    thresholds = with_test_results(thresholds, y[held], probs[held])
    metrics = compute_metrics(y[held], probs[held], labels)
    summary = {
        "calibration_data": str(cfg.calibration_data),
        "calibration_images": len(cal),
        "held_out_images": len(held),
    }
    return thresholds, metrics, pixels, summary


def fixed_thresholds(labels: list[str], threshold: float) -> Thresholds:
    return Thresholds(
        policy="fixed",
        target=None,
        per_class=[ClassThreshold(label=label, threshold=threshold) for label in labels],
        calibrated=False,
        method=f"fixed threshold {threshold:g} for every class, given at import; "
        "not calibrated on data",
    )
