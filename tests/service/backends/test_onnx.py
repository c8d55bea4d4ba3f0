"""The ONNX backend reports the provider that is really active; no silent CPU fallback."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from contract.metadata import load_metadata
from service.backends.onnx import (
    OnnxBackend,
    lone_session_wanted,
    session_options,
    wanted_providers,
)
from service.settings import Settings
from tests.helpers.models import reference_probabilities, write_version

GPU_FIRST = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def version_dir(tmp_path):
    return write_version(tmp_path, "tiny", 1)


def test_cpu_session_runs_and_reports_cpu(version_dir) -> None:
    settings = Settings(providers=["CPUExecutionProvider"], intra_op_threads=1, _env_file=None)
    backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), settings)
    assert backend.device == "CPUExecutionProvider"
    x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(backend.run(x), reference_probabilities(x), atol=1e-5)


def test_reported_provider_is_the_active_one(version_dir, caplog) -> None:
    settings = Settings(providers=GPU_FIRST, _env_file=None)
    with caplog.at_level(logging.INFO, logger="service.backends.onnx"):
        backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), settings)
    assert backend.device == backend.session.get_providers()[0]
    wanted = wanted_providers(settings)[0]
    if backend.device != wanted:  # e.g. CUDA built in but no GPU/driver here: said out loud
        assert any(
            r.levelno == logging.WARNING and backend.device in r.getMessage()
            for r in caplog.records
        )
    assert any(f"active provider {backend.device}" in r.getMessage() for r in caplog.records)


def test_require_provider_refuses_a_fallback(version_dir) -> None:
    settings = Settings(providers=GPU_FIRST, require_provider=True, _env_file=None)
    wanted = wanted_providers(settings)[0]
    try:
        backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), settings)
    except RuntimeError as err:
        assert "VISOR_REQUIRE_PROVIDER" in str(err)
    else:
        assert backend.device == wanted


def test_gpu_providers_skipped_without_an_nvidia_device(monkeypatch, caplog) -> None:
    import onnxruntime as ort

    from service.backends import onnx as onnx_backend

    monkeypatch.setattr(onnx_backend, "_nvidia_device_visible", lambda: False)
    with caplog.at_level(logging.INFO, logger="service.backends.onnx"):
        assert wanted_providers(Settings(providers=GPU_FIRST, _env_file=None)) == [
            "CPUExecutionProvider"
        ]
    built_in = [p for p in GPU_FIRST if p in ort.get_available_providers()]
    if "CUDAExecutionProvider" in built_in:
        assert any("no NVIDIA device visible" in r.getMessage() for r in caplog.records)
    # NOTE: insisting on a provider keeps it, so the failure stays loud (no silent CPU)
    insist = Settings(providers=GPU_FIRST, require_provider=True, _env_file=None)
    assert wanted_providers(insist) == built_in


def test_workers_split_the_cores_between_their_sessions(monkeypatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    threads = lambda **kw: session_options(Settings(**kw, _env_file=None)).intra_op_num_threads
    assert threads() == 0  # one worker: ONNX Runtime's own default (a thread per core)
    assert threads(workers=2) == 4
    assert threads(workers=3) == 2
    assert threads(workers=16) == 1
    assert threads(workers=2, intra_op_threads=3) == 3  # an explicit setting always wins


def test_a_lone_single_image_runs_on_the_spinning_session(version_dir) -> None:
    meta = load_metadata(version_dir)
    settings = Settings(providers=["CPUExecutionProvider"], _env_file=None)
    backend = OnnxBackend(version_dir / "model.onnx", meta, settings)
    one = np.random.default_rng(1).uniform(0, 255, (1, 8, 8, 1)).astype(np.float32)
    three = np.random.default_rng(2).uniform(0, 255, (3, 8, 8, 1)).astype(np.float32)
    used: list[str] = []
    hold, holding = threading.Event(), threading.Event()

    class Recorder:  # the real session, noting which one answered; can hold a run open
        def __init__(self, name: str, session) -> None:
            self.name, self.session, self.hold_next = name, session, False

        def run(self, outputs, feed):
            used.append(self.name)
            if self.hold_next:
                self.hold_next = False
                holding.set()
                assert hold.wait(10)
            return self.session.run(outputs, feed)

    backend.session = main = Recorder("main", backend.session)
    backend.lone = Recorder("lone", backend.lone)
    np.testing.assert_allclose(backend.run(one), reference_probabilities(one), atol=1e-5)
    np.testing.assert_allclose(backend.run(three), reference_probabilities(three), atol=1e-5)
    assert used == ["lone", "main"]
    # a batch of three holds the cores: a single image now goes to the main session, no spinning
    main.hold_next = True
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(backend.run, three)
        assert holding.wait(10)
        np.testing.assert_allclose(backend.run(one), reference_probabilities(one), atol=1e-5)
        hold.set()
        np.testing.assert_allclose(busy.result(10), reference_probabilities(three), atol=1e-5)
    assert used == ["lone", "main", "main", "main"]
    backend.run(one)
    assert used[-1] == "lone"  # alone again


@pytest.mark.parametrize("off", [{"ort_spin_lone_requests": False}, {"ort_allow_spinning": True}])
def test_lone_session_off(version_dir, off: dict) -> None:
    settings = Settings(providers=["CPUExecutionProvider"], **off, _env_file=None)
    backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), settings)
    assert not lone_session_wanted(settings, ["CPUExecutionProvider"])
    assert backend.session.get_session_options().intra_op_num_threads == 0  # all cores


def test_with_a_lone_session_overlapping_batches_split_the_cores(version_dir, monkeypatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    settings = Settings(providers=["CPUExecutionProvider"], inference_threads=2, _env_file=None)
    backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), settings)
    assert backend.session.get_session_options().intra_op_num_threads == 4
    # a small model's lone run is shorter than a thread's wake-up: one thread
    assert backend.lone.get_session_options().intra_op_num_threads == 1


def test_a_large_models_lone_session_uses_every_core(version_dir, monkeypatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    size_mb = (version_dir / "model.onnx").stat().st_size / 1e6
    settings = Settings(
        providers=["CPUExecutionProvider"], auto_workers_max_model_mb=size_mb / 2, _env_file=None
    )
    backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), settings)
    assert backend.lone.get_session_options().intra_op_num_threads == 0  # ORT: one per core
    pinned = settings.model_copy(update={"intra_op_threads": 3})
    backend = OnnxBackend(version_dir / "model.onnx", load_metadata(version_dir), pinned)
    assert backend.lone.get_session_options().intra_op_num_threads == 3
