"""Shared fixtures. ``digits_repo``: a model repository holding ``digits/1/`` made by the real CLI."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from pathlib import Path

import pytest

from tests.helpers.training import run_training_cli, train_digits


@pytest.fixture(scope="session")
def digits_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``models/`` folder with ``digits/1/`` (16x16 grayscale CNN, 8 epochs, default settings).

    Built once per session by ``python -m training dataset digits`` + ``train`` (~25 s on an idle
    2-core machine, the default cross-fitted calibration's 5 extra fits included). Accurate
    enough (~0.91 on the test split) to pass the default publish gate and to have most classes
    certified, so the tests see thresholds a real model gets, not a near-chance model's.
    """
    base = tmp_path_factory.mktemp("digits_repo")
    data, models = base / "data", base / "models"
    done = run_training_cli("dataset", "digits", "--out", str(data))
    assert done.returncode == 0, f"python -m training dataset failed:\n{done.stderr[-3000:]}"
    train_digits(data, models, base / "work")
    assert (models / "digits" / "1" / "metadata.json").is_file()
    return models
