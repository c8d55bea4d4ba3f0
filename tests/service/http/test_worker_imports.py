"""What a BentoML serving process may import: memory at rest is mostly imports (issue 25).

Each process of ``python -m service serve`` imports its own copy of every module it loads, so a
package pulled in at import time is paid once per worker and once more in BentoML's supervisor.
The script runs in a fresh interpreter: first what the supervisor imports (the launcher and the
service class), then what a worker adds when it builds and starts its ``VisorServer`` on an ONNX
model, and prints both sets of top-level packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import asyncio, json, sys
from prometheus_client import CollectorRegistry

def packages():
    # top-level packages, and Visor's own modules by their full names
    names = {n for n, mod in sys.modules.items() if mod is not None}
    return sorted({n.split(".")[0] for n in names} | {n for n in names if n.startswith("service.")})

from service.http import bento
from service.http.frontend import Visor
supervisor = packages()

from service.server import VisorServer
from service.settings import Settings

async def main():
    settings = Settings(models=sys.argv[1], providers=["CPUExecutionProvider"], poll_interval_s=0,
                        grpc_port=0, host="127.0.0.1", warmup_batch_sizes=[1], _env_file=None)
    server = VisorServer(settings, registry=CollectorRegistry())
    await server.start()
    assert server.engine.model_ready("tiny", None)
    await server.stop()

asyncio.run(main())
print(json.dumps({"supervisor": supervisor, "worker": packages()}))
"""

# Never needed to serve an ONNX model: training and its frameworks, and the scientific stack
# that only offline steps use (scipy: the calibration bounds, imported once feedback arrives).
NEVER = {
    "tensorflow",
    "tf_keras",
    "keras",
    "training",
    "onnx",
    "tf2onnx",
    "h5py",
    "pandas",
    "sklearn",
    "scipy",
    "matplotlib",
    "torch",
    "pyspark",
}
# The supervisor only spawns and watches the workers: no engine, no inference runtime there.
NOT_IN_SUPERVISOR = NEVER | {"onnxruntime", "service.server", "service.engine"}


def _imports(model_repo) -> dict[str, set[str]]:
    out = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-c", SCRIPT, str(model_repo)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return {role: set(names) for role, names in found.items()}


def test_serving_processes_import_only_what_serving_needs(model_repo) -> None:
    found = _imports(model_repo)
    assert "onnxruntime" in found["worker"]  # the script did load and run the model
    assert found["supervisor"] & NOT_IN_SUPERVISOR == set()
    assert found["worker"] & NEVER == set()
