"""Cross-fitted calibration through the CLI: out-of-fold predictions, kept for a re-export."""

from __future__ import annotations

from pathlib import Path

from contract.metadata import load_metadata
from tests.helpers.training import write_classes


def test_cross_fitted_calibration_is_recorded_and_reused_on_resume(cli, tmp_path: Path) -> None:
    data = write_classes(tmp_path / "d", {"a": 14, "b": 14, "c": 14}, size=8)
    out, work = tmp_path / "models", tmp_path / "w"
    args = ["train", "--data", str(data), "--name", "cf", "--out", str(out)]
    args += ["--work-dir", str(work), "--image-size", "8", "--epochs", "2", "--batch-size", "8"]
    args += ["--calibration-folds", "3", "--min-test-accuracy", "0"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    meta = load_metadata(out / "cf" / "1")
    sizes = meta.training["dataset"]["split_sizes"]
    pooled = sizes["train"] + sizes["val"]
    assert meta.thresholds.method.startswith(
        f"cross-fitted: out-of-fold predictions on {pooled} train+val images from 3 extra models"
    )
    assert sum(c.positives for c in meta.thresholds.curves.values()) == pooled
    assert (work / "calibration-oof.npz").is_file()
    again = cli(*args, "--resume")  # a finished run: re-export without fitting anything again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the out-of-fold predictions" in again.stderr
    second = load_metadata(out / "cf" / "2")
    assert second.thresholds.per_class == meta.thresholds.per_class
