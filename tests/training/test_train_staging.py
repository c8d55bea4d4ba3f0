"""Publishing: the version folder is readable by another user, and a publisher killed mid-way
leaves a staging folder that the next publish removes (and the server never loads)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from contract.metadata import ModelMetadata, load_metadata
from service.repository import scan
from tests.helpers import ROOT
from training.config import ExportConfig
from training.export import publish
from training.staging import make_staging

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder other users may enter (pytest's own tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="visor-staging-test-"))
    base.chmod(0o755)
    old = os.umask(0o022)
    yield base
    os.umask(old)
    shutil.rmtree(base, ignore_errors=True)


def _copy_version(source: Path) -> tuple:
    def fill(tmp: Path) -> None:
        shutil.copy2(source / "model.onnx", tmp / "model.onnx")
        shutil.copytree(source / "saved_model", tmp / "saved_model")

    def finish(tmp: Path, version: int) -> ModelMetadata:
        return load_metadata(source).model_copy(update={"version": version})

    return fill, finish


def test_published_version_is_readable_by_another_user(digits_repo: Path, shared_dir) -> None:
    fill, finish = _copy_version(digits_repo / "digits" / "1")
    target = publish(ExportConfig(name="digits", out_dir=shared_dir), fill, finish)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [target, *target.rglob("*")]}
    assert {m for p, m in modes.items() if p.is_dir()} == {0o755}
    assert {m for p, m in modes.items() if p.is_file()} == {0o644}
    if os.getuid() != 0:
        pytest.skip("reading as another user needs root to switch users")
    files = [str(p) for p in target.rglob("*") if p.is_file()]
    # NOTE: cat, not Python: the test's interpreter may live where that user cannot go
    read = subprocess.run(
        ["cat", *files], user=NOBODY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    assert read.returncode == 0, read.stderr


_KILLED_PUBLISHER = """
import sys, time
from pathlib import Path
import training
from training.config import ExportConfig
from training.export import publish
def fill(tmp):
    (tmp / "model.onnx").write_bytes(b"half written")
    time.sleep(600)
publish(ExportConfig(name="digits", out_dir=Path(sys.argv[1])), fill, None)
"""


def test_staging_left_by_a_killed_publisher_is_removed_next_time(
    digits_repo: Path, shared_dir
) -> None:
    model_dir = shared_dir / "digits"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PUBLISHER, str(shared_dir)],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    end = time.monotonic() + 120  # liveness only: the publisher imports TensorFlow first
    while not list(model_dir.glob(".tmp-*/model.onnx")):
        assert proc.poll() is None and time.monotonic() < end, "the publisher never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (stale,) = model_dir.glob(".tmp-*")
    assert stale.name.startswith(f".tmp-{proc.pid}-")
    busy = make_staging(model_dir)  # a publisher of this (live) process: must be kept
    shutil.copy2(digits_repo / "digits" / "1" / "metadata.json", busy / "metadata.json")
    assert scan(shared_dir) == {}  # the server never sees staging folders

    fill, finish = _copy_version(digits_repo / "digits" / "1")
    target = publish(ExportConfig(name="digits", out_dir=shared_dir), fill, finish)
    assert not stale.exists() and busy.exists()
    assert scan(shared_dir) == {"digits": {1: target}}
