"""Two-phase transfer learning in-process: frozen base, then fine-tuning at a 10x lower LR."""

from __future__ import annotations

from pathlib import Path

import pytest

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tests.helpers.training import random_backbone, write_classes

keras = pytest.importorskip("tf_keras")

from training.config import (
    AugmentConfig,
    DataConfig,
    ExportConfig,
    FitConfig,
    ModelConfig,
    RunConfig,
)
from training.data import load_dataset
from training.models import BASE_NAME
from training.train import fit


def test_backbone_two_phase_fit_continues_epoch_numbering(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "d", {"a": 8, "b": 8}, size=8, mode="RGB")
    # --weights none instead trains the whole backbone in one phase (test_train_gate.py).
    backbone = random_backbone(tmp_path / "backbone.h5")
    cfg = RunConfig(
        data=DataConfig(data, image_size=8),
        export=ExportConfig(name="t", out_dir=tmp_path / "m"),
        augment=AugmentConfig(rotation=0, zoom=0, translation=0, contrast=0, flip="horizontal"),
        model=ModelConfig("mobilenetv2", backbone, fine_tune_layers=10),
        fit=FitConfig(
            work_dir=tmp_path / "w", epochs=1, fine_tune_epochs=1, batch_size=8, quiet=True
        ),
    )
    result = fit(cfg, load_dataset(cfg.data))
    assert [int(row["epoch"]) for row in result.history] == [0, 1]
    assert result.history[1]["lr"] == pytest.approx(result.history[0]["lr"] / 10)
    model = result.model
    assert model.input_shape == (None, 8, 8, 3) and model.output_shape == (None, 2)
    assert model.get_layer("resize").output_shape[1:3] == (32, 32)  # in-graph resize to the minimum
    assert model.get_layer(BASE_NAME).trainable is False  # exported copy: fresh build, frozen base
    assert (tmp_path / "w" / "phase1.weights.h5").exists() and (
        tmp_path / "w" / "phase2.weights.h5"
    ).exists()
