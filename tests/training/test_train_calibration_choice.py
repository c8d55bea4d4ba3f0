"""Which calibration a run pays for: the validation split when it can certify every class,
cross-fitting otherwise; transfer learning cross-fits heads on the frozen backbone's features."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from contract.calibration import lower_bound
from tests.helpers.training import random_backbone, write_classes

keras = pytest.importorskip("tf_keras")

from training import crossfit
from training.config import (
    AugmentConfig,
    CalibrationConfig,
    DataConfig,
    ExportConfig,
    FitConfig,
    ModelConfig,
    RunConfig,
)
from training.data import Dataset, Split, load_dataset
from training.train import fit


def _dataset(val_per_class: list[int], train_per_class: int = 100) -> Dataset:
    def split(counts: list[int]) -> Split:
        labels = np.repeat(np.arange(len(counts)), counts)
        return Split([Path(f"{i}.png") for i in range(len(labels))], labels)

    classes = len(val_per_class)
    return Dataset(
        labels=[chr(ord("a") + c) for c in range(classes)],
        color_mode="grayscale",
        splits={
            "train": split([train_per_class] * classes),
            "val": split(val_per_class),
            "test": split([5] * classes),
        },
        skipped=[],
    )


def _config(folds: int | None = None, epochs: int = 30, **calibration) -> RunConfig:
    return RunConfig(
        data=DataConfig(Path("unused")),
        export=ExportConfig(name="c"),
        fit=FitConfig(epochs=epochs),
        calibration=CalibrationConfig(folds=folds, **calibration),
    )


def test_auto_uses_the_validation_split_when_every_class_has_the_support_to_certify() -> None:
    # 59 error-free images are the fewest whose 95 % lower bound reaches 0.95
    assert (
        lower_bound(np.array(58), np.array(58), 0.95)
        < 0.95
        <= lower_bound(np.array(59), np.array(59), 0.95)
    )
    folds, why = crossfit.choose_folds(_config(), _dataset([59, 80, 60]))
    assert folds == 0 and why.startswith("auto: every class has >= 59 validation images")
    folds, why = crossfit.choose_folds(_config(), _dataset([80, 58, 60]))
    assert folds == crossfit.AUTO_FOLDS and "class 'b' has 58 validation images" in why
    # a lower target needs less support: recall 0.9 at 95 % takes 29
    recall = _config(policy="recall", target=0.9)
    assert crossfit.choose_folds(recall, _dataset([29, 29]))[0] == 0
    assert crossfit.choose_folds(recall, _dataset([29, 28]))[0] == crossfit.AUTO_FOLDS


def test_explicit_folds_and_unfitted_runs() -> None:
    big = _dataset([200, 200])
    assert crossfit.choose_folds(_config(folds=3), big) == (3, "--calibration-folds 3")
    assert crossfit.choose_folds(_config(folds=0), big)[0] == 0
    assert crossfit.choose_folds(_config(epochs=0), _dataset([5, 5]))[0] == 0
    tiny = _dataset([1, 1], train_per_class=2)  # 3 train+val images a class: no 5 folds
    folds, why = crossfit.choose_folds(_config(), tiny)
    assert folds == 0 and "fewer than 5 train+val" in why


def test_transfer_learning_cross_fits_heads_on_features_computed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_classes(tmp_path / "d", {"a": 10, "b": 10, "c": 10}, size=8, mode="RGB")
    backbone = random_backbone(tmp_path / "backbone.h5")
    cfg = RunConfig(
        data=DataConfig(data, image_size=8),
        export=ExportConfig(name="t", out_dir=tmp_path / "m"),
        augment=AugmentConfig(rotation=0, zoom=0, translation=0, contrast=0),
        model=ModelConfig("mobilenetv2", backbone, fine_tune_layers=5),
        fit=FitConfig(
            work_dir=tmp_path / "w", epochs=2, fine_tune_epochs=1, batch_size=8, quiet=True
        ),
        calibration=CalibrationConfig(folds=2),
    )
    ds = load_dataset(cfg.data)
    result = fit(cfg, ds)
    with caplog.at_level(logging.INFO, logger="training.crossfit"):
        labels, probs, method = crossfit.out_of_fold(cfg, ds, 2, result)
    pooled = len(crossfit.pool(ds).labels)
    assert method.startswith(
        f"cross-fitted: out-of-fold predictions on {pooled} train+val images from 2 extra "
        "classifier heads on the frozen backbone's features (2-fold, 2 epochs each)"
    )
    assert probs.shape == (pooled, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(labels, crossfit.pool(ds).labels)
    runs = [r.getMessage() for r in caplog.records if "backbone" in r.getMessage()]
    assert runs == [f"calibration: backbone features of {pooled} images, computed once"]
