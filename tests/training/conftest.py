"""Fixtures for training tests: a CLI runner and synthetic class-folder data sets on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from visor_train_helpers import write_classes

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
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


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli("train", ...)`` runs ``python -m training ...`` in a subprocess."""
    return _run


@pytest.fixture
def make_classes() -> Callable[..., Path]:
    return write_classes
