"""Two local MultiWorkerMirroredStrategy workers on loopback: both finish, only the chief exports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from contract.metadata import load_metadata
from tests.helpers import ROOT
from tests.helpers.training import write_classes


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_finish_and_the_chief_exports(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", {"a": 10, "b": 10}, size=8)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        args = [
            "--quiet",
            "train",
            "--data",
            str(data),
            "--name",
            "mw",
            "--out",
            str(tmp_path / f"out{index}"),
            "--work-dir",
            str(tmp_path / "work"),
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--strategy",
            "multiworker",
            "--min-test-accuracy",
            "0",
            "--calibration-folds",
            "0",
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "training", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        try:
            results.append(proc.communicate(timeout=240))
        finally:
            proc.kill()
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    chief = load_metadata(tmp_path / "out0" / "mw" / "1")
    assert chief.labels == ["a", "b"] and chief.training["fit"]["strategy"] == "multiworker"
    assert "published" in results[0][0]
    assert not (tmp_path / "out1").exists()  # the non-chief worker does not export
