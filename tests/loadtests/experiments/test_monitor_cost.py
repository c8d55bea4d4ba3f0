"""loadtests/experiments/monitor_cost.py runs and reports every figure docs/monitoring.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.models import write_version


def test_monitor_cost_reports_time_and_memory(tmp_path: Path) -> None:
    version_dir = write_version(tmp_path / "models", "tiny", 1)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.experiments.monitor_cost",
            "--version-dir",
            str(version_dir),
        ]
        + ["--images", "2", "--number", "300", "--repeat", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["images_per_request"] == 2
    for key in ("record_us", "record_without_reference_us", "request_id_us"):
        assert out[key] > 0, out
    assert out["stored_bytes_per_request"] > 100, out  # at least the 32-character id
