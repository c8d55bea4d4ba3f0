"""Whole-process checks: ONNX serving never imports TensorFlow; the CLI serves and stops on SIGTERM;
the committed gRPC stubs are what scripts/gen_proto.sh generates."""

from __future__ import annotations

import contextlib
import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.servers import free_port

NO_TF = """
import asyncio, sys
import numpy as np
from prometheus_client import CollectorRegistry
from service.engine import Engine
from service.grpc.frontend import GrpcFrontend
from service.settings import Settings
from service.types import InferOptions

async def main():
    s = Settings(models=sys.argv[1], providers=["CPUExecutionProvider"], poll_interval_s=0,
                 grpc_port=0, host="127.0.0.1", warmup_batch_sizes=[1], _env_file=None)
    engine = Engine(s, registry=CollectorRegistry())
    await engine.start()
    server = GrpcFrontend(engine, s)
    await server.start()
    r = await engine.classify_array("tiny", None, np.zeros((1, 8, 8, 1), np.uint8), InferOptions(),
                                    protocol="grpc")
    await server.stop(0)
    await engine.stop()
    assert len(r) == 1
    print("tensorflow" in sys.modules, "tf_keras" in sys.modules)

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_serving_onnx_never_imports_tensorflow(model_repo) -> None:
    out = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-c", NO_TF, str(model_repo)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_cli_serves_grpc_and_stops_on_sigterm(model_repo) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--models",
            str(model_repo),
            "--grpc-only",
            "--grpc-port",
            str(port),
            "--host",
            "127.0.0.1",
            "--providers",
            "CPUExecutionProvider",
            "--max-batch-size",
            "4",
            "--grace-period",
            "5",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(InferenceServerException):  # not listening yet
                if client.is_server_ready():
                    break
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        assert client.is_model_ready("tiny")
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "gRPC server stopped" in output


def test_cli_help_names_the_settings() -> None:
    out = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-m", "service", "serve", "--help"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for word in ("--grpc-port", "--protocol", "VISOR_MAX_BATCH_SIZE", "--grpc-only"):
        assert word in out.stdout


def test_generated_stubs_are_current(tmp_path) -> None:
    if subprocess.run(
        [sys.executable, "-c", "import grpc_tools"], capture_output=True, check=False
    ).returncode:
        pytest.skip("grpcio-tools is not installed")
    env = {**os.environ, "OUT": str(tmp_path), "VENV": "system", "PYTHON": sys.executable}
    subprocess.run(["bash", "scripts/gen_proto.sh"], cwd=ROOT, env=env, check=True, timeout=120)
    committed = ROOT / "service" / "grpc" / "generated"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, committed, names, shallow=False)
    assert not mismatch and not errors, f"regenerate with scripts/gen_proto.sh: {mismatch}"


def test_service_imports_nothing_from_training() -> None:
    """``service/`` stands alone: the serving image has no ``training/``."""
    import ast

    offenders = []
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "training"
            ]
    assert not offenders


def test_serves_from_a_tree_without_training(model_repo, tmp_path: Path) -> None:
    """A copy of ``service/`` alone, with ``training`` made unimportable, serves a model."""
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT / "service", tree / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    script = (
        "import sys\nsys.modules['training'] = None  # any import of it now fails\n"
        + NO_TF
        + "\nassert not [m for m, mod in sys.modules.items() if m.startswith('training') and mod]\n"
        + "import service; print(service.__file__)\n"
    )
    out = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-c", script, str(model_repo)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1].startswith(str(tree))
