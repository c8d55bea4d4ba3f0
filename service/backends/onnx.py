"""ONNX Runtime backend: TensorRT → CUDA → CPU where available, and say which one is active."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.metadata import ModelMetadata
from service.settings import Settings

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
_dlls_preloaded = False


def _nvidia_device_visible() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


def wanted_providers(settings: Settings) -> list[str]:
    """The configured providers this onnxruntime build offers, in order of preference."""
    available = set(ort.get_available_providers())
    chosen = [p for p in settings.providers if p in available]
    # Onnxruntime-gpu lists the CUDA/TensorRT providers even on a machine without a GPU,
    # and trying them prints pages of library errors before falling back. Without an NVIDIA
    # device they cannot work, so skip them (said once in the log) unless the user insists
    # with VISOR_REQUIRE_PROVIDER, in which case the failure must stay loud.
    if not settings.require_provider and not _nvidia_device_visible():
        gpu = [p for p in chosen if p in _GPU_PROVIDERS]
        if gpu:
            log.info("no NVIDIA device visible: skipping %s", ", ".join(gpu))
            chosen = [p for p in chosen if p not in _GPU_PROVIDERS]
    return chosen or ["CPUExecutionProvider"]


def _preload_cuda_dlls(providers: list[str]) -> None:
    # Onnxruntime-gpu ≥ 1.21 can load the CUDA/cuDNN libraries that pip's nvidia-* wheels
    # install; without this the CUDA provider fails to start and ORT silently falls back to CPU.
    global _dlls_preloaded
    if _dlls_preloaded or not _GPU_PROVIDERS & set(providers):
        return
    _dlls_preloaded = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - a missing CUDA install is reported, not fatal
        log.warning("onnxruntime.preload_dlls() failed: %s", exc)


def intra_op_threads(settings: Settings, batches: int = 1) -> int:
    """The setting, or (0) the worker's share of the usable cores for one of ``batches``.

    0 means ONNX Runtime's default, a thread per core: what one session alone should have.
    """
    if settings.intra_op_threads:
        return settings.intra_op_threads
    share = settings.worker_count * batches
    if share == 1:
        return 0
    # Every worker has its own sessions and every batch in flight its own threads; with
    # ORT's default each would start a thread per core, N of them putting N threads on a core.
    return max(1, len(os.sched_getaffinity(0)) // share)


def lone_session_wanted(settings: Settings, providers: list[str]) -> bool:
    """Whether single-image batches that run alone get their own, spinning CPU session."""
    return (
        settings.ort_spin_lone_requests
        and not settings.ort_allow_spinning
        and providers[0] == "CPUExecutionProvider"
    )


def lone_threads(settings: Settings, path: Path) -> int:
    """Threads of the lone-request session: one for a small model, else the worker's share.

    A small model's batch of one runs in tens of microseconds, less than waking a second thread
    costs: with one worker holding both cores, two threads made digits' lone gRPC requests about
    20 % slower than one (docs/benchmarks.md, issue 25). "Small" is the line ``--workers auto``
    draws too (``auto_workers_max_model_mb``).
    """
    if settings.intra_op_threads:
        return settings.intra_op_threads
    if path.stat().st_size <= settings.auto_workers_max_model_mb * 1e6:
        return 1
    return intra_op_threads(settings)


def session_options(
    settings: Settings, spinning: bool | None = None, batches: int = 1, threads: int | None = None
) -> ort.SessionOptions:
    """The server's session options for a session running up to ``batches`` batches at once.

    ``spinning`` overrides VISOR_ORT_ALLOW_SPINNING, ``threads`` the intra-op thread count.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads(settings, batches) if threads is None else threads
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization]
    opts.log_severity_level = 3
    # Spinning (ORT's default) is off: it shortens a lone request but costs throughput
    # once batches overlap (docs/benchmarks.md): two batches in flight plus the event loop
    # leave no core for a thread that spins.
    spin = "1" if (settings.ort_allow_spinning if spinning is None else spinning) else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if spin == "1":
        # spin between the operators of a run, never past its end
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


class OnnxBackend:
    """One InferenceSession; ``session.run`` releases the GIL, so batches run in threads."""

    def __init__(self, path: Path, meta: ModelMetadata, settings: Settings) -> None:
        providers = wanted_providers(settings)
        _preload_cuda_dlls(providers)
        lone = lone_session_wanted(settings, providers)
        # With a session of its own for lone requests, the main session only runs batches
        # that may overlap (inference_threads at once), so each gets its share of the cores:
        # single-threaded batches side by side beat multi-threaded ones fighting over the same
        # cores (docs/benchmarks.md).
        main = session_options(settings, batches=settings.inference_threads if lone else 1)
        self.session = ort.InferenceSession(str(path), sess_options=main, providers=providers)
        self.device = self.session.get_providers()[0]
        self._input = meta.input.name
        self._outputs = [meta.output.name]
        if self.device != providers[0]:
            msg = (
                f"{meta.name} v{meta.version}: wanted {providers[0]} but ONNX Runtime is running "
                f"on {self.device}"
            )
            if settings.require_provider:
                raise RuntimeError(msg + " (VISOR_REQUIRE_PROVIDER is set)")
            log.warning(msg)
        log.info("%s v%s: ONNX Runtime active provider %s", meta.name, meta.version, self.device)
        # Spinning threads cut a lone request's latency but cost throughput once batches
        # overlap (docs/benchmarks.md). So on the CPU a second, spinning session answers
        # single-image batches that run while nothing else does, and every other batch goes to
        # the main session. It is only ever fed batch 1, so its arena stays small. Wanted only
        # when CPU is the provider asked for, so it never sits beside a GPU session that fell
        # back.
        self.lone: ort.InferenceSession | None = None
        self._running = 0
        self._lock = threading.Lock()
        if lone:
            self.lone = ort.InferenceSession(
                str(path),
                sess_options=session_options(
                    settings, spinning=True, threads=lone_threads(settings, path)
                ),
                providers=["CPUExecutionProvider"],
            )
            one = np.zeros(
                (1, meta.input.height, meta.input.width, meta.input.channels), np.float32
            )
            for session in (self.lone, self.session):  # warm both at batch 1
                session.run(self._outputs, {self._input: one})

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.lone is None:
            return self.session.run(self._outputs, {self._input: batch})[0]
        with self._lock:  # Every run counts, so "alone" means no batch of any size runs
            alone = self._running == 0
            self._running += 1
        try:
            session = self.lone if alone and len(batch) == 1 else self.session
            return session.run(self._outputs, {self._input: batch})[0]
        finally:
            with self._lock:
                self._running -= 1

    def close(self) -> None:
        del self.session
        self.lone = None
