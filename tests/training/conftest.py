"""Fixtures for training tests: a CLI runner and synthetic class-folder data sets on disk."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.s3 import s3_server  # noqa: F401 - the loopback S3 server
from tests.helpers.training import run_training_cli, write_classes


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli("train", ...)`` runs ``python -m training ...`` in a subprocess."""
    return run_training_cli


@pytest.fixture
def make_classes() -> Callable[..., Path]:
    return write_classes
