"""A refused publish or a failed parity check keeps the trained model; ``export`` publishes it
without fitting again, by the command the error printed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from contract.metadata import load_metadata, sha256_path
from tests.helpers.training import write_classes


def _printed_command(stderr: str) -> list[str]:
    found = re.search(r"run: (python -m training export .*)$", stderr, re.MULTILINE)
    assert found, stderr[-3000:]
    words = shlex.split(found.group(1))
    assert words[:3] == ["python", "-m", "training"]
    return words[3:]


def test_refused_and_failed_exports_keep_the_model_and_export_publishes_it(
    cli, tmp_path: Path
) -> None:
    data = write_classes(tmp_path / "d", {"a": 14, "b": 14, "c": 14}, size=8)
    out, work = tmp_path / "models", tmp_path / "work dir"
    args = ["train", "--data", str(data), "--name", "again", "--out", str(out)]
    args += ["--work-dir", str(work), "--image-size", "8", "--epochs", "2", "--batch-size", "8"]
    refused = cli(*args, "--calibration-folds", "0", "--min-test-accuracy", "1.01")
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert "refusing to publish" in refused.stderr and "Nothing was published" in refused.stderr
    assert not out.exists()
    weights = work / "final.weights.h5"
    fitted = sha256_path(weights)
    retry = _printed_command(refused.stderr)
    assert "--min-test-accuracy 0 --calibration-folds 0" in shlex.join(retry)
    assert retry[retry.index("--work-dir") + 1] == str(work)

    # Exact parity (no difference at all) fails on ONNX's float32 rounding: nothing published.
    failed = cli(*retry, "--parity-atol", "0", "--parity-rtol", "0")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "export parity failed" in failed.stderr and "onnx: max abs diff" in failed.stderr
    assert "Epoch" not in failed.stdout + failed.stderr  # nothing was fitted
    assert list((out / "again").iterdir()) == []  # no version, no staging folder left
    export = _printed_command(failed.stderr)
    rtol = float(export[export.index("--parity-rtol") + 1])
    assert 0 < rtol < 1e-3 and export[export.index("--parity-atol") + 1] == "0"

    published = cli(*export)
    assert published.returncode == 0, published.stderr[-3000:]
    assert re.search(r"published .*again/1 test_accuracy=", published.stdout)
    assert sha256_path(weights) == fitted and "Epoch" not in published.stderr
    meta = load_metadata(out / "again" / "1")
    check = meta.parity_check
    assert check is not None and (check.atol, check.rtol) == (0.0, rtol)
    assert check.images == meta.metrics.samples  # the whole (small) test split
    assert set(check.top1_agreement) == {"onnx", "savedmodel", "keras_h5"}
    assert meta.training["export"]["parity_rtol"] == rtol
    assert meta.training["export"]["min_test_accuracy"] == 0
    assert len(meta.training["history"]) == 2  # the history of the run that fitted it
    card = (out / "again" / "1" / "report" / "MODEL_CARD.md").read_text()
    assert f"0 + {rtol:g} x p" in card
