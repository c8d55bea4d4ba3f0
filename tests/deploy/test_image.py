"""The Dockerfile, .dockerignore and bentofile.yaml, checked by reading (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name → its instructions (comments dropped), in file order."""
    parsed = DockerfileParser(path=str(ROOT / "Dockerfile"))
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for item in parsed.structure:
        if item["instruction"] == "FROM":
            name = item["value"].split(" AS ")[-1].strip() if " AS " in item["value"] else "?"
            current = out.setdefault(name, [])
        if item["instruction"] != "COMMENT":
            current.append((item["instruction"], item["value"]))
    return out


def _chain(stages: dict[str, list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    """Every instruction that builds ``name``: its FROM parents and --from sources."""
    own = stages[name]
    parent = own[0][1].split(" AS ")[0].strip()
    instructions = _chain(stages, parent) if parent in stages else []
    for instruction, value in own:
        source = re.search(r"--from=(\S+)", value)
        if instruction == "COPY" and source and source.group(1) in stages:
            instructions += _chain(stages, source.group(1))
    return instructions + own


def test_default_target_serves_without_tensorflow(stages: dict) -> None:
    assert list(stages)[-1] == "serve"
    runs = " ".join(v for i, v in _chain(stages, "serve") if i == "RUN")
    assert "scripts/install.sh serve" in runs
    assert "install.sh train" not in runs and "install.sh full" not in runs
    assert "tensorflow" not in runs.lower()


def test_image_starts_like_make_serve(stages: dict) -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/serve.sh" in makefile and "scripts/install.sh" in makefile
    serve = dict(stages["runtime"])
    assert serve["ENTRYPOINT"] == '["scripts/serve.sh"]'
    assert set(serve["EXPOSE"].split()) == {"3000", "50051"}
    assert serve["USER"] not in ("root", "0")
    assert "/readyz" in serve["HEALTHCHECK"]


def test_baked_target_trains_with_the_default_model_script(stages: dict) -> None:
    runs = " ".join(v for i, v in _chain(stages, "baked") if i == "RUN")
    assert "scripts/install.sh train" in runs and "scripts/default-model.sh /models" in runs


def test_gpu_base_is_a_build_argument() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11", text, re.MULTILINE)
    assert re.search(r"BASE_IMAGE=nvidia/cuda:13[.\d]*-cudnn-runtime", text)


PINNED = re.compile(
    r"^ARG (BASE_IMAGE|TRAIN_IMAGE)=python:3\.11-slim-bookworm@sha256:([0-9a-f]{64})$", re.MULTILINE
)


def test_base_images_are_pinned_by_digest() -> None:
    pins = dict(PINNED.findall((ROOT / "Dockerfile").read_text()))
    assert set(pins) == {"BASE_IMAGE", "TRAIN_IMAGE"}
    assert len(set(pins.values())) == 1  # serving and training start from the same base


def test_refresh_script_repins_both_lines_and_refuses_a_bad_digest(tmp_path: Path) -> None:
    copy = tmp_path / "Dockerfile"
    copy.write_text((ROOT / "Dockerfile").read_text())
    script = str(ROOT / "scripts" / "refresh-base-digest.sh")
    env = {"PATH": os.environ["PATH"], "DOCKERFILE": str(copy)}
    fresh = "b" * 64
    done = subprocess.run(
        [script], env={**env, "DIGEST": f"sha256:{fresh}"}, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert dict(PINNED.findall(copy.read_text())) == {"BASE_IMAGE": fresh, "TRAIN_IMAGE": fresh}
    bad = subprocess.run(
        [script], env={**env, "DIGEST": "sha256:latest"}, capture_output=True, check=False
    )
    assert bad.returncode == 2 and b"not a sha256:<64 hex> digest" in bad.stderr
    assert dict(PINNED.findall(copy.read_text()))["BASE_IMAGE"] == fresh  # left as it was


def test_copied_paths_exist_and_are_not_ignored(stages: dict) -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in (".venv", "models", ".git", "tests"):
        assert name in ignored
    for instructions in stages.values():
        for instruction, value in instructions:
            if instruction != "COPY" or "--from" in value:
                continue
            for source in value.split()[:-1]:
                path = source.rstrip("/")
                assert (ROOT / path).exists(), path
                assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path


def test_bentofile_serves_the_service_with_the_serve_lock() -> None:
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    module, _, attr = bento["service"].partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert attr == "Visor"
    # the serving profile's hashed lock (CPU wheel), as the image installs it; no re-locking
    assert bento["python"]["requirements_txt"] == "requirements/serve-cpu.txt"
    assert bento["python"]["lock_packages"] is False
    assert (ROOT / bento["python"]["requirements_txt"]).exists()
    assert importlib.util.find_spec(module) is not None


def test_pyproject_pins_the_releases_the_http_glue_accepts() -> None:
    from service.http.bento import SUPPORTED

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {f"{name}{spec}" for name, spec in SUPPORTED.items()} <= set(dependencies)


def test_healthcheck_follows_the_configured_port_and_stop_is_graceful(stages: dict) -> None:
    runtime = dict(stages["runtime"])
    # the script (run against real servers, plain and TLS, in tests/service/test_tls.py) reads
    # VISOR_HTTP_PORT and the TLS settings; scripts/ is copied into the image
    assert '"scripts/healthcheck.py"' in runtime["HEALTHCHECK"]
    assert ":3000/" not in runtime["HEALTHCHECK"]
    assert "VISOR_HTTP_PORT" in (ROOT / "scripts" / "healthcheck.py").read_text()
    assert runtime["STOPSIGNAL"] == "SIGTERM"


def test_image_installs_one_onnxruntime_from_the_lock_of_its_accelerator(stages: dict) -> None:
    deps = stages["deps"]
    assert ("ARG", "ACCEL=auto") in deps
    copied = [v.split()[0] for i, v in deps if i == "COPY"]
    assert "requirements/" in copied  # the locks, before the install runs
    script = next(v for i, v in deps if i == "RUN" and "scripts/install.sh serve" in v)
    # auto: a CUDA base image (it sets CUDA_VERSION) gets the GPU lock, any other the CPU lock;
    # install.sh installs exactly one ONNX Runtime wheel from requirements/serve-ACCEL.txt
    assert "CUDA_VERSION" in script and "VISOR_ACCEL=$accel" in script
    assert "onnxruntime-gpu" not in script and "pip install" not in script
    # the venv is slimmed in the same layer, and what serving imports is checked after the code
    assert script.index("install.sh serve") < script.index("scripts/slim-venv.sh .venv")
    order = [(i, v) for i, v in deps if i in ("COPY", "RUN")]
    check = next(k for k, (i, v) in enumerate(order) if "scripts/serve-imports.py" in v)
    code = next(k for k, (i, v) in enumerate(order) if i == "COPY" and v.startswith("service/"))
    assert code < check


def test_trainer_stage_installs_the_train_lock(stages: dict) -> None:
    trainer = stages["trainer"]
    assert "requirements/" in [v.split()[0] for i, v in trainer if i == "COPY"]
    assert any("scripts/install.sh train" in v for i, v in trainer if i == "RUN")
