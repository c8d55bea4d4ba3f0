"""The peer servers of ``make bench``: what users would otherwise pick, serving the same ONNX file.

Each runs from its own virtual environment under ``build/peers/<name>/`` (``make peers``, i.e.
``scripts/peer-venvs.sh``) with the load client of Visor's venv sending the same serialised
requests, so the peers' grpcio/protobuf versions never meet the client's. A peer whose venv is
missing is reported "not installed", never faked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from loadtests import procs

VENVS = procs.ROOT / "build" / "peers"
# name -> (title, the protocols it answers)
PEERS = {
    "kserve": ("KServe Python server", ("grpc", "rest-v2")),
    "pytriton": ("Triton via PyTriton", ("grpc", "rest-v2")),
}


def python_of(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def missing(name: str) -> str | None:
    """Why peer ``name`` cannot run here, or None when its venv is installed."""
    if name not in PEERS:
        return f"unknown peer (known: {', '.join(PEERS)})"
    if not list((VENVS / name).glob(".peer-installed-*")):
        return f"not installed (make peers: scripts/peer-venvs.sh {name})"
    return None


def _libdir(python: Path) -> str:
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout


def start_peer(
    name: str, version_dir: Path, model: str, log_path: Path, ready_timeout: float = 180.0
) -> procs.Server:
    """Start peer ``name`` on free loopback ports; returns once ``model`` is ready over gRPC."""
    python, http_port, grpc_port = python_of(name), procs.free_port(), procs.free_port()
    argv = [str(python), "-m", f"loadtests.peer_servers.{name}_server"]
    argv += ["--version-dir", str(Path(version_dir).resolve()), "--name", model]
    argv += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = {"PYTHONUNBUFFERED": "1"}
    if name == "pytriton":
        argv += ["--metrics-port", str(procs.free_port())]
        # NOTE: Triton's Python-backend stub links libpython, which a venv does not carry.
        env["LD_LIBRARY_PATH"] = _libdir(python).strip()
    server = procs.spawn(name, argv, env, log_path)
    server.http_port, server.grpc_port = http_port, grpc_port
    server.wait_ready(lambda: procs.grpc_model_ready(grpc_port, model), ready_timeout)
    return server
