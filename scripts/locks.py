"""The install profiles and their hashed locks, requirements/PROFILE-ACCEL.txt.

scripts/lock.sh writes the locks (uv pip compile), scripts/install.sh installs one with plain pip,
and tests/test_locks.py runs ``problems()``. Standard library only, so it runs before any install:

    python3 scripts/locks.py extras serve cpu   # the pyproject extras of a lock, comma-separated
    python3 scripts/locks.py digest             # the hash of the inputs, written in each header
    python3 scripts/locks.py check              # what tests/test_locks.py checks; exit 1 on a problem
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK_DIR = "requirements"

# profile -> the pyproject extras it installs besides the accelerator's (`cpu` or `gpu`)
PROFILES: dict[str, tuple[str, ...]] = {
    "serve": (),  # the server alone: no TensorFlow, no test tools
    "train": ("train",),  # `make serve`: serving + what creates the default model
    "score": ("spark",),  # offline scoring, local or on Spark
    "dev": ("train", "spark", "dev"),  # `make test`: everything
}
ACCELS = ("cpu", "gpu")
# The one ONNX Runtime wheel each accelerator installs (both own the `onnxruntime` module).
ORT_WHEEL = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
# What a profile must never install, whatever pulls it in (issue 23: `make serve` installs no test
# tool and no Spark; serving has no TensorFlow).
TEST_TOOLS = {"pytest", "hypothesis", "selenium", "locust", "tritonclient", "grpcio-tools", "ruff"}
MUST_NOT = {
    "serve": TEST_TOOLS | {"tensorflow", "tf-keras", "pyspark"},
    "train": TEST_TOOLS | {"pyspark"},
    "score": TEST_TOOLS | {"tensorflow", "tf-keras"},
    "dev": set(),
}
# uv's resolution: one lock for every platform (markers where they differ), CPython 3.11 and up.
RESOLUTION = ("--universal", "--python-version", "3.11")

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_DIGEST = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path(profile: str, accel: str, root: Path = ROOT) -> Path:
    return root / LOCK_DIR / f"{profile}-{accel}.txt"


def extras(profile: str, accel: str) -> list[str]:
    if profile not in PROFILES or accel not in ACCELS:
        raise ValueError(f"unknown lock {profile}-{accel}: profiles {list(PROFILES)}, {ACCELS}")
    return [accel, *PROFILES[profile]]


def inputs_digest(pyproject_text: str) -> str:
    """Hash of everything the locks are resolved from: pyproject's requirements and the profiles.

    Every lock depends on all of them (each is constrained to the `dev` lock's pins), so any change
    makes every lock stale and scripts/lock.sh regenerates them all.
    """
    data = tomllib.loads(pyproject_text)
    project = data["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
        "profiles": PROFILES,
        "accels": ACCELS,
        "resolution": RESOLUTION,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def read_lock(text: str) -> tuple[str | None, list[tuple[str, str, str | None]], list[str]]:
    """(inputs digest, [(name, version, marker)], malformed lines) of a lock's text."""
    found = _DIGEST.search(text)
    pins, bad = [], []
    # a requirement is its first line plus `--hash` continuation lines
    for entry in re.split(r"\n(?=\S)", text):
        first = entry.splitlines()[0] if entry.strip() else ""
        if not first or first.startswith("#"):
            continue
        match = _PIN.match(first)
        if not match:
            bad.append(f"not an exact pin: {first!r}")
            continue
        if "--hash=sha256:" not in entry:
            bad.append(f"no hash: {first!r}")
            continue
        name, version, marker = match.groups()
        pins.append((canonical(name), version, marker))
    return (found.group(1) if found else None), pins, bad


def _requirements(data: dict, names: list[str]) -> list[str]:
    """The profile's requirements, with the build requirements (install.sh builds Visor with them)."""
    project = data["project"]
    out = list(project.get("dependencies", [])) + data["build-system"]["requires"]
    for extra in names:
        out += project.get("optional-dependencies", {}).get(extra, [])
    return out


def problems(root: Path = ROOT) -> list[str]:
    """Every way the locks disagree with pyproject.toml or with each other (empty when none).

    Needs `packaging` (the dev profile has it); offline: reads files only.
    """
    from packaging.requirements import Requirement

    pyproject = (root / "pyproject.toml").read_text()
    data = tomllib.loads(pyproject)
    digest = inputs_digest(pyproject)
    regenerate = "run scripts/lock.sh"
    out: list[str] = []
    seen: dict[tuple[str, str | None], tuple[str, str]] = {}
    for profile in PROFILES:
        for accel in ACCELS:
            path = lock_path(profile, accel, root)
            rel = path.relative_to(root)
            if not path.exists():
                out.append(f"{rel} is missing: {regenerate}")
                continue
            found, pins, bad = read_lock(path.read_text())
            out += [f"{rel}: {line}" for line in bad]
            if found != digest:
                out.append(
                    f"{rel} is stale: pyproject.toml's requirements changed since it was "
                    f"generated (inputs-sha256 {found} != {digest}); {regenerate}"
                )
            versions: dict[str, list[str]] = {}
            for name, version, marker in pins:
                versions.setdefault(name, []).append(version)
                if seen.setdefault((name, marker), (version, str(rel)))[0] != version:
                    other = seen[(name, marker)]
                    out.append(
                        f"{rel} pins {name}=={version} but {other[1]} pins {other[0]}: every "
                        f"profile must install the versions `make test` tests; {regenerate}"
                    )
            for line in _requirements(data, extras(profile, accel)):
                req = Requirement(line)
                name = canonical(req.name)
                if name not in versions:
                    out.append(
                        f"{rel} lacks {name}, which pyproject requires ({line}); {regenerate}"
                    )
                    continue
                for version in versions[name]:
                    if not req.specifier.contains(version, prereleases=True):
                        out.append(f"{rel} pins {name}=={version}, outside {line!r}; {regenerate}")
            other_ort = ORT_WHEEL["gpu" if accel == "cpu" else "cpu"]
            if other_ort in versions:
                out.append(f"{rel} holds {other_ort} beside {ORT_WHEEL[accel]}: never both")
            for name in sorted(MUST_NOT[profile] & set(versions)):
                out.append(f"{rel}: the {profile} profile must not install {name}")
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["extras"] and len(argv) == 3:
        print(",".join(extras(argv[1], argv[2])))
    elif argv == ["digest"]:
        print(inputs_digest((ROOT / "pyproject.toml").read_text()))
    elif argv == ["profiles"]:
        print(" ".join(PROFILES))
    elif argv == ["resolution"]:
        print(" ".join(RESOLUTION))
    elif argv == ["check"]:
        found = problems()
        print("\n".join(found) or "locks agree with pyproject.toml")
        return 1 if found else 0
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
