"""The CLI end to end: flags, a mixed photo folder, a transfer backbone, the digits_repo fixture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.metadata import load_metadata, sha256_path
from tests.helpers.training import write_classes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "d", "--name", "n", "--epochs", "-1"], "below the minimum 0"),
        (["train", "--data", "d", "--name", "n", "--model", "vgg"], "invalid choice: 'vgg'"),
        (
            [
                "train",
                "--data",
                "d",
                "--name",
                "n",
                "--target-precision",
                "0.9",
                "--target-recall",
                "0.9",
            ],
            "not allowed with argument",
        ),
        (
            ["train", "--data", "d", "--name", "n", "--target-precision", "1.5"],
            "not between 0 and 1",
        ),
        (["train", "--name", "n"], "required: --data"),
        (["train", "--data", "d", "--name", "n", "--bogus"], "unrecognized arguments: --bogus"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_flags_exit_2_with_an_argparse_message(cli, args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_help_explains_the_options(cli) -> None:
    done = cli("train", "--help")
    assert done.returncode == 0
    for flag in (
        "--model",
        "--image-size",
        "--epochs",
        "--fine-tune-epochs",
        "--batch-size",
        "--target-precision",
        "--target-recall",
        "--seed",
        "--resume",
        "--quiet",
        "--weights",
        "--strategy",
        "--work-dir",
    ):
        assert flag in done.stdout


def test_imagenet_weights_missing_from_cache_is_a_clear_error(cli, tmp_path: Path) -> None:
    data = write_classes(tmp_path / "d", {"a": 5, "b": 5}, size=8)
    done = cli(
        "train",
        "--data",
        str(data),
        "--name",
        "n",
        "--out",
        str(tmp_path / "m"),
        "--model",
        "mobilenetv2",
        "--weights",
        "imagenet",
        "--epochs",
        "0",
        "--work-dir",
        str(tmp_path / "w"),
        env={"KERAS_HOME": str(tmp_path / "keras")},
    )
    assert done.returncode == 1
    assert "not in the Keras cache" in done.stderr and "never downloads" in done.stderr


def _photo_folder(root: Path) -> Path:
    write_classes(root, {"cat": 8}, size=40, mode="RGB", fmt="jpg")
    write_classes(root, {"dog": 8}, size=23, mode="L", fmt="png", seed=1)
    write_classes(root, {"dog": 3}, size=50, mode="RGBA", fmt="png", seed=2, prefix="rgba")
    for i, path in enumerate(sorted((root / "cat").glob("00[0-2].jpg"))):
        Image.open(path).resize((30 + 7 * i, 20 + 5 * i)).save(path)  # mixed sizes
    (root / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF broken")
    return root


def test_mixed_photo_folder_trains_as_rgb_and_skips_the_corrupt_file(cli, tmp_path: Path) -> None:
    data = _photo_folder(tmp_path / "photos")
    out = tmp_path / "models"
    done = cli(
        "train",
        "--data",
        str(data),
        "--name",
        "pets",
        "--out",
        str(out),
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--work-dir",
        str(tmp_path / "w"),
        "--target-recall",
        "0.9",
        "--min-test-accuracy",
        "0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "corrupt.jpg" in done.stderr and "skipped 1 unreadable file(s)" in done.stderr
    meta = load_metadata(out / "pets" / "1")
    assert meta.input.color_mode == "rgb" and meta.input.channels == 3
    assert (meta.input.height, meta.input.width) == (16, 16)
    assert meta.thresholds.policy == "recall" and meta.thresholds.target == 0.9
    assert any("corrupt.jpg" in s for s in meta.training["dataset"]["skipped_files"])
    evaluated = cli("evaluate", "--model-dir", str(out / "pets" / "1"), "--data", str(data))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout)["images"] == 19


def test_digits_repo_fixture_is_a_valid_published_version(digits_repo: Path, cli) -> None:
    version = digits_repo / "digits" / "1"
    meta = load_metadata(version)
    assert meta.labels == [str(i) for i in range(10)]
    assert (meta.input.color_mode, meta.input.channels, meta.input.resize_method) == (
        "grayscale",
        1,
        "bilinear",
    )
    assert meta.onnx_opset == 17 and set(meta.artifacts) == {"onnx", "savedmodel", "keras_h5"}
    for artifact in meta.artifacts.values():
        assert sha256_path(version / artifact.path) == artifact.sha256
    assert all(v <= 1e-5 for v in meta.parity.values())
    assert meta.parity_check is not None and meta.parity_check.rtol == 1e-3
    assert min(meta.parity_check.top1_agreement.values()) > 0.9  # near-ties may swap
    test_size = meta.training["dataset"]["split_sizes"]["test"]
    assert meta.metrics.samples == test_size == np.asarray(meta.metrics.confusion_matrix).sum()
    for name in ("training_curves.png", "confusion_matrix.png", "pr_curves.png", "MODEL_CARD.md"):
        assert (version / "report" / name).stat().st_size > 0
    assert not [p for p in (digits_repo / "digits").iterdir() if p.name.startswith(".tmp")]
    _calibration_is_cross_fitted_and_reported(version)


def _calibration_is_cross_fitted_and_reported(version: Path) -> None:
    meta = load_metadata(version)
    t, sizes = meta.thresholds, meta.training["dataset"]["split_sizes"]
    assert t.method.startswith("cross-fitted") and t.confidence == 0.95
    pooled = sizes["train"] + sizes["val"]
    assert f"on {pooled} train+val images from 5 extra models" in t.method
    for c in t.per_class:
        curve = t.curves[c.label]
        assert curve.positives > sizes["val"] / 10  # every train+val image of the class
        assert c.lower_bound is not None and c.support is not None and c.best_certified is not None
        assert c.certified == (c.lower_bound >= t.target)
    ref = meta.reference
    assert ref.split == "validation" and ref.samples == sizes["val"]
    assert sum(ref.label_distribution.values()) == pytest.approx(1.0)
    assert sum(ref.confidence.fractions) == pytest.approx(1.0) and len(ref.confidence.edges) == 11
    card = (version / "report" / "MODEL_CARD.md").read_text()
    uncertified = [c for c in t.per_class if not c.certified]
    assert not re.search(r"\bmet\b", card)  # a target is certified or not, never just "met"
    if uncertified:
        assert f"Warning: {len(uncertified)} of 10 classes are NOT certified" in card
        for c in uncertified:
            assert f"| {c.label} | {c.threshold:.4f} | **NO** |" in card
