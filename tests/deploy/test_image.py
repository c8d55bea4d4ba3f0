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


def test_bentofile_serves_the_service_with_pyproject_dependencies() -> None:
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    module, _, attr = bento["service"].partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert attr == "Visor"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert bento["python"]["packages"] == project["dependencies"]
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


def test_cpu_image_swaps_in_the_cpu_wheel_and_the_gpu_image_keeps_its_own(stages: dict) -> None:
    deps = stages["deps"]
    order = [i for i, (instruction, value) in enumerate(deps) if instruction == "RUN"]
    install = next(i for i in order if "scripts/install.sh serve" in deps[i][1])
    swap = next(i for i in order if "ORT_PACKAGE" in deps[i][1])
    assert install < swap  # after install.sh, which installs onnxruntime-gpu
    script = deps[swap][1]
    # plain onnxruntime only after onnxruntime-gpu is gone: the two must never sit side by side
    assert script.index("uninstall -y -q onnxruntime-gpu") < script.index('"onnxruntime==$v"')
    assert "CUDA_VERSION" in script  # auto: the CUDA base images keep onnxruntime-gpu
    assert ("ARG", "ORT_PACKAGE=auto") in deps
