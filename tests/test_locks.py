"""The hashed locks (requirements/) against pyproject.toml, and how install.sh picks one. Offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import locks  # scripts/locks.py: what scripts/lock.sh writes and this test reads

INSTALL = ROOT / "scripts" / "install.sh"


def test_locks_agree_with_pyproject() -> None:
    assert locks.problems() == []


def test_every_profile_has_a_cpu_and_a_gpu_lock_with_one_onnxruntime() -> None:
    for profile in locks.PROFILES:
        for accel, wheel in locks.ORT_WHEEL.items():
            _, pins, _ = locks.read_lock(locks.lock_path(profile, accel).read_text())
            names = {name for name, _, _ in pins}
            assert wheel in names and set(locks.ORT_WHEEL.values()) - {wheel} - names
    # the serving profiles hold neither TensorFlow nor a test tool (issue 23)
    _, pins, _ = locks.read_lock(locks.lock_path("train", "cpu").read_text())
    assert "tensorflow" in {name for name, _, _ in pins}
    assert not {"pytest", "pyspark", "selenium"} & {name for name, _, _ in pins}


def _copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / locks.LOCK_DIR, tmp_path / locks.LOCK_DIR)
    return tmp_path


def test_a_changed_requirement_makes_every_lock_stale(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace('"numpy>=1.26,<2.2"', '"numpy>=2.2"'))
    found = locks.problems(root)
    stale = [p for p in found if " is stale: " in p]
    assert len(stale) == len(locks.PROFILES) * len(locks.ACCELS)
    assert all("run scripts/lock.sh" in p for p in stale)
    outside = [p for p in found if "pins numpy==" in p and "outside 'numpy>=2.2'" in p]
    assert len(outside) == len(stale)


def test_a_new_requirement_is_missing_from_the_locks(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(
        text.replace('  "httptools>=0.6",\n', '  "httptools>=0.6",\n  "orjson>=3",\n')
    )
    lacking = [p for p in locks.problems(root) if "lacks orjson" in p]
    assert len(lacking) == len(locks.PROFILES) * len(locks.ACCELS)


def test_a_tampered_lock_is_reported(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    serve = locks.lock_path("serve", "cpu", root)
    text = serve.read_text()
    # a pin that lost its hashes, a range instead of a pin, both ONNX Runtime wheels, a test tool
    text = re.sub(r"(?m)^(uvicorn==\S+) \\\n(    --hash=\S+( \\)?\n)+", r"\1\n", text)
    text += "pyyaml>=6 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    text += "onnxruntime-gpu==1.31.1 \\\n    --hash=sha256:" + "1" * 64 + "\n"
    text += "pytest==9.2.0 \\\n    --hash=sha256:" + "2" * 64 + "\n"
    serve.write_text(text)
    found = [p for p in locks.problems(root) if p.startswith("requirements/serve-cpu.txt")]
    assert any("no hash: 'uvicorn==" in p for p in found), found
    assert any("not an exact pin: 'pyyaml>=6" in p for p in found), found
    assert any("holds onnxruntime-gpu beside onnxruntime" in p for p in found), found
    assert any("must not install pytest" in p for p in found), found


def test_profiles_pin_the_same_versions(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    train = locks.lock_path("train", "cpu", root)
    text = train.read_text()
    version = re.search(r"(?m)^scipy==(\S+) ; python_full_version < '3.12'", text).group(1)
    train.write_text(text.replace(f"scipy=={version} ;", "scipy==1.11.0 ;"))
    found = [p for p in locks.problems(root) if "scipy==" in p]
    assert any("every profile must install the versions `make test` tests" in p for p in found)


def _plan(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return _install(*args, path=path, VISOR_INSTALL_PLAN="1", **env)


def _install(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    if path is not None:
        environ["PATH"] = path
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("profile", list(locks.PROFILES))
@pytest.mark.parametrize("accel", locks.ACCELS)
def test_install_picks_the_lock_of_the_profile_and_accelerator(profile: str, accel: str) -> None:
    done = _plan(profile, VISOR_ACCEL=accel)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [profile, accel, f"requirements/{profile}-{accel}.txt"]


def test_install_asks_nvidia_smi_for_a_gpu(tmp_path: Path) -> None:
    # without nvidia-smi (this machine): the CPU wheel
    bare = f"{tmp_path}:/usr/bin:/bin"
    assert _plan("train", path=bare, VISOR_ACCEL="auto").stdout.split()[1] == "cpu"
    # nvidia-smi that lists a GPU (`nvidia-smi -L` prints "GPU 0: NAME (UUID: ...)")
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = -L ] && echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"\n'
    )
    fake.chmod(0o755)
    assert _plan("train", path=bare, VISOR_ACCEL="auto").stdout.split()[1] == "gpu"
    # nvidia-smi present but no device (a driver without a card): still the CPU wheel
    fake.write_text('#!/bin/sh\necho "No devices were found"; exit 6\n')
    assert _plan("train", path=bare, VISOR_ACCEL="auto").stdout.split()[1] == "cpu"


def test_install_refuses_an_unknown_profile_or_accelerator() -> None:
    done = _plan("everything")
    assert (
        done.returncode == 2
        and "unknown profile 'everything' (serve|train|score|dev)" in done.stderr
    )
    done = _plan("serve", VISOR_ACCEL="tpu")
    assert done.returncode == 2 and "VISOR_ACCEL='tpu': use auto, cpu or gpu" in done.stderr


def test_install_stops_before_pip_when_the_disk_is_too_small(tmp_path: Path) -> None:
    # pip on a full disk fails minutes in with "[Errno 28]" and half an environment; install.sh
    # says how much it needs and creates nothing. "Too small" is asked for, not made: a need
    # larger than the disk's free space.
    venv = tmp_path / "deep" / "venv"
    free_gb = shutil.disk_usage(tmp_path).free // 2**30
    done = _install("serve", VENV=str(venv), VISOR_INSTALL_MIN_FREE_GB=str(free_gb + 64))
    assert done.returncode == 1, done.stderr
    assert f"free on the disk of {venv}; the serve profile needs about {free_gb + 64} GB" in (
        done.stderr
    )
    assert not venv.exists() and not venv.parent.exists()


def _make_dry_run(target: str) -> str:
    done = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_make_serve_installs_train_and_make_test_installs_dev() -> None:
    serve = _make_dry_run("serve")
    assert "scripts/install.sh train" in serve and "install.sh dev" not in serve
    assert "apt-get" not in serve
    assert "scripts/install.sh dev" in _make_dry_run("test")
