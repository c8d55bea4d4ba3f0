"""Kill a training run with SIGKILL mid-epoch; --resume continues from the last completed epoch."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.training import write_classes

EPOCHS = 4


def _epochs_logged(history: Path) -> list[int]:
    if not history.exists():
        return []
    with history.open() as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def test_sigkill_mid_epoch_then_resume_loses_nothing(tmp_path: Path, cli) -> None:
    data = write_classes(tmp_path / "data", {"a": 14, "b": 14, "c": 14}, size=8)
    work, out = tmp_path / "work", tmp_path / "models"
    args = [
        "--quiet",
        "train",
        "--data",
        str(data),
        "--name",
        "r",
        "--out",
        str(out),
        "--work-dir",
        str(work),
        "--image-size",
        "8",
        "--batch-size",
        "4",
        "--epochs",
        str(EPOCHS),
        "--patience",
        "50",
        "--min-test-accuracy",
        "0",
        "--calibration-folds",
        "0",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "VISOR_TEST_BATCH_DELAY_S": "0.15"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    history = work / "history.csv"
    try:
        deadline = time.monotonic() + 120
        while (
            len(_epochs_logged(history)) < 2 and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert _epochs_logged(history) == [0, 1], (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.6)  # 30 batches x 0.15 s per epoch: now well inside epoch 3 (index 2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _epochs_logged(history) == [0, 1]  # the killed epoch never completed
    assert not (out / "r").exists() or not any(p.name.isdigit() for p in (out / "r").iterdir())
    checkpoint_before = (work / "best-phase1.h5").stat().st_mtime_ns

    done = cli(*args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = _epochs_logged(history)
    assert epochs == list(range(EPOCHS)), f"resume re-ran or skipped epochs: {epochs}"
    assert (out / "r" / "1" / "metadata.json").is_file()
    assert (work / "best-phase1.h5").stat().st_mtime_ns >= checkpoint_before

    again = cli(*args, "--resume")  # a finished run: re-export without fitting again
    assert again.returncode == 0, again.stderr[-3000:]
    assert _epochs_logged(history) == list(range(EPOCHS))
    assert (out / "r" / "2" / "metadata.json").is_file()


def _resume_over(tmp_path: Path, cli, saved_config: str):
    """``train --resume`` on a work dir whose config.json is ``saved_config`` (``{data}``: the
    data folder of this run)."""
    data = write_classes(tmp_path / "data", {"a": 6, "b": 6}, size=8)
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text(saved_config.replace("{data}", str(data)))
    return cli(
        "train",
        "--data",
        str(data),
        "--name",
        "r",
        "--out",
        str(tmp_path / "m"),
        "--work-dir",
        str(work),
        "--image-size",
        "8",
        "--epochs",
        "1",
        "--resume",
        "--min-test-accuracy",
        "0",
    )


def _saved_cnn_config(data_dir: str) -> str:
    """A config.json of a cnn run written before --cnn-width existed."""
    return json.dumps(
        {
            "data": {"data_dir": data_dir, "image_size": 8, "seed": 1337},
            "model": {"architecture": "cnn"},
        }
    )


@pytest.mark.parametrize(
    ("saved", "refusal"),
    [
        (_saved_cnn_config("/elsewhere"), "data.data_dir='/elsewhere'"),
        # NOTE: a config written before --cnn-width existed (its cnn was 32 wide) is refused too.
        (_saved_cnn_config("{data}"), "model.cnn_width=None, not 16"),
        ('{"data": {"data_dir": "/tr', "cannot read"),
        ("[]", "cannot read"),
    ],
    ids=["another-run", "another-cnn-width", "truncated", "list"],
)
def test_resume_refuses_a_work_dir_it_cannot_continue(
    tmp_path: Path, cli, saved: str, refusal: str
) -> None:
    done = _resume_over(tmp_path, cli, saved)
    assert done.returncode == 1
    assert refusal in done.stderr and "Traceback" not in done.stderr
