"""How many worker processes ``--workers auto`` means, decided once at start-up.

A small model leaves one Python event loop the bottleneck: per request the loop spends far more
time on the protocol than the model does, so a second loop on a second core raises what the
server answers over many connections. A large model is the bottleneck itself, ONNX Runtime
already spreads one batch over every core, and a second worker only doubles the memory.

Every worker also costs about 150 MB at rest (its own numpy, ONNX Runtime, gRPC and BentoML),
and what the workers share needs a core too: ONNX Runtime's batch threads, gRPC's pollers, the
kernel's network work. ``auto`` therefore gives one worker per usable core but one (at most
``MAX_AUTO_WORKERS``) when every model in the repository is small (its ONNX file at most
``VISOR_AUTO_WORKERS_MAX_MODEL_MB``) and runs on the CPU, and one worker otherwise. On two cores
that is one worker, served without BentoML's supervisor (``VISOR_SINGLE_PROCESS``): 150 MB at rest
instead of 400; equal at one request in flight, on one gRPC connection and at 8 REST connections;
about a tenth fewer REST requests/s at 32 connections (docs/benchmarks.md, issue 25), which
``--workers 2`` buys back.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.settings import Settings

MAX_AUTO_WORKERS = 4


def resolve_workers(settings: Settings) -> Settings:
    """``settings`` with ``workers`` a number: ``auto`` decided for this repository and machine."""
    if settings.workers != "auto":
        return settings
    count = auto_workers(
        settings.models, list(settings.providers), settings.auto_workers_max_model_mb
    )
    return settings.model_copy(update={"workers": count})


def auto_workers(models: Path, providers: list[str], max_model_mb: float) -> int:
    """The worker count ``--workers auto`` means for this repository on this machine."""
    cores = len(os.sched_getaffinity(0))
    if cores < 3:
        return 1
    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(providers[:1])
    if gpu and (Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()):
        return 1  # one session keeps the GPU busy; more would only split its memory
    sizes = [_model_bytes(v) for v in _versions(models)]
    if not sizes or max(sizes) > max_model_mb * 1e6:
        return 1
    return min(cores - 1, MAX_AUTO_WORKERS)


def _versions(models: Path) -> list[Path]:
    if not models.is_dir():
        return []
    return [
        v
        for m in models.iterdir()
        if m.is_dir() and not m.name.startswith(".")
        for v in m.iterdir()
        if v.is_dir() and v.name.isdigit()
    ]


def _model_bytes(version: Path) -> int:
    onnx = version / "model.onnx"
    if onnx.is_file():
        return onnx.stat().st_size
    return sum(p.stat().st_size for p in version.rglob("*") if p.is_file())
