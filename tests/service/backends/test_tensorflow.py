"""SavedModel and Keras HDF5 backends (TensorFlow, in a subprocess) agree with ONNX on digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def test_savedmodel_and_hdf5_match_onnx(digits_repo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [
            sys.executable,
            str(Path(__file__).with_name("tf_backends_check.py")),
            str(digits_repo / "digits" / "1"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["tf_after_onnx"] is False  # the ONNX backend alone never imported TensorFlow
    for kind in ("savedmodel", "keras_h5"):
        assert report[kind]["diff"] <= 1e-4, report
        assert report[kind]["device"] in ("CPU", "GPU")
