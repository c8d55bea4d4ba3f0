"""Smoke test: the scoring benchmark runs end to end on a handful of images (local + HTTP; Spark
has its own test in tests/service/test_score.py). It checks the script works, never a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import ROOT
from tests.helpers.models import encode, write_version


def test_score_bench_writes_json_and_the_doc_table(tmp_path: Path) -> None:
    write_version(tmp_path / "models", "tiny", 1)
    rng = np.random.default_rng(0)
    for i in range(5):
        folder = tmp_path / "images" / str(i % 2)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(encode(rng.integers(0, 256, (8, 8, 1), np.uint8)))
    doc = tmp_path / "scoring.md"
    doc.write_text(
        "# Scoring\n\nbefore\n<!-- score-bench:start -->\nold\n<!-- score-bench:end -->\nafter\n"
    )
    out = tmp_path / "bench.json"
    argv = ["--models", str(tmp_path / "models"), "--model", "tiny", "--images",
            str(tmp_path / "images"), "--engines", "local,http", "--batch", "2",
            "--out", str(out), "--doc", str(doc)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.experiments.score_bench", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["engines"]) == {"local", "http"}
    assert all(r["images"] == 5 for r in result["engines"].values())
    assert result["engines"]["local"]["max_abs_diff_vs_http"] < 1e-6
    text = doc.read_text()
    assert "before" in text and "after" in text and "old" not in text and "| local | 5 |" in text
