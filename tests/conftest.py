"""Shared fixtures. ``digits_repo``: a model repository holding ``digits/1/`` made by the real CLI."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_training_cli(
    *args: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m training ARGS`` in a subprocess (TensorFlow stays out of the test process)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def digits_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``models/`` folder with ``digits/1/`` (16x16 grayscale CNN, 2 epochs: fast, not accurate).

    Built once per session by ``python -m training dataset digits`` + ``train`` (~40-60 s: the
    default cross-fitted calibration fits 5 extra 2-epoch models). Near chance, so nothing is
    certified and the publish gate is switched off.
    """
    base = tmp_path_factory.mktemp("digits_repo")
    data, models = base / "data", base / "models"
    for args in (
        ("dataset", "digits", "--out", str(data)),
        (
            "--quiet",
            "train",
            "--data",
            str(data),
            "--name",
            "digits",
            "--out",
            str(models),
            "--work-dir",
            str(base / "work"),
            "--image-size",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            # NOTE: 2 epochs are far from accurate; the publish gate would refuse this model.
            "--min-test-accuracy",
            "0",
        ),
    ):
        done = run_training_cli(*args)
        assert done.returncode == 0, f"python -m training {args[0]} failed:\n{done.stderr[-3000:]}"
    assert (models / "digits" / "1" / "metadata.json").is_file()
    return models
