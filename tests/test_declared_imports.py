"""Every third-party import in service/, contract/ and training/ is declared for its profile.

A module's profile is its folder's (service/ and contract/ serve, training/ trains) unless
PROFILE_OF says more. Each import must come from a distribution that pyproject.toml declares for
that profile (not one that merely arrives through another package), and a module imported at
module level may not need a bigger profile than its importer: `python -m service serve` must run
in the `serve` environment. Imports inside functions are the optional paths (TensorFlow backends,
scoring) and are checked against their own module's profile only. AST only, offline.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import locks  # scripts/locks.py: the profiles and their extras

FOLDERS = {"service": "serve", "contract": "serve", "training": "train"}
# Modules whose imports need more than their folder's profile.
PROFILE_OF = {
    "service/backends/_tf.py": "train",
    "service/backends/savedmodel.py": "train",
    "service/backends/keras_h5.py": "train",
    "service/scoring/inputs.py": "score",
    "service/scoring/local.py": "score",
    "service/scoring/output.py": "score",
    "service/scoring/spark.py": "score",
    "service/scoring/spark_worker.py": "score",
    "service/scoring/summary.py": "score",
}
FIRST_PARTY = set(FOLDERS) | {"tests", "loadtests"}


def _extras_of(profile: str) -> set[str]:
    return set(locks.PROFILES[profile]) | set(locks.ACCELS)


def declared(pyproject: dict, profile: str) -> set[str]:
    """Distributions pyproject declares for ``profile`` (either ONNX Runtime wheel)."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in sorted(_extras_of(profile)):
        lines += project["optional-dependencies"].get(extra, [])
    return {locks.canonical(Requirement(line).name) for line in lines}


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(dotted module, line, at module level) of each absolute import; TYPE_CHECKING blocks skipped."""
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                # `from a.b import c`: c may be a module, a.b.c (resolved to the deepest file)
                out.extend((f"{child.module}.{a.name}", child.lineno, top) for a in child.names)
            inner = top and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            visit(child, inner)

    visit(tree, True)
    return out


@cache
def _top_level_map() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide ``module`` (by its files, for namespace packages)."""
    top = module.split(".")[0]
    names = {locks.canonical(n) for n in _top_level_map().get(top, [])}
    if len(names) > 1:  # a namespace package such as google.*: the one that has this submodule
        prefix = "/".join(module.split(".")[:2])
        names = {
            n
            for n in names
            if any(str(f).startswith(prefix) for f in (distribution(n).files or []))
        } or names
    return names


def module_profile(rel: str) -> str:
    return PROFILE_OF.get(rel, FOLDERS[rel.split("/")[0]])


def _module_file(root: Path, module: str) -> str | None:
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.exists():
                return candidate.relative_to(root).as_posix()
    return None


def problems(root: Path, pyproject: dict) -> list[str]:
    out: list[str] = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "/generated/" in rel:
                continue
            profile = module_profile(rel)
            allowed = declared(pyproject, profile)
            for module, line, top in _imports(ast.parse(path.read_text(), rel)):
                name = module.split(".")[0]
                if name in sys.stdlib_module_names or name == "__future__":
                    continue
                if name in FIRST_PARTY:
                    target = _module_file(root, module)
                    if (
                        top
                        and target
                        and not _extras_of(module_profile(target)) <= _extras_of(profile)
                    ):
                        out.append(
                            f"{rel}:{line} ({profile}) imports {module} "
                            f"({module_profile(target)}) at module level"
                        )
                    continue
                dists = distributions_of(module)
                if not dists:
                    found = f"{rel}:{line} imports {name}, which no installed package provides"
                elif not dists & allowed:
                    found = (
                        f"{rel}:{line} imports {name} (from {'/'.join(sorted(dists))}), "
                        f"not declared for the {profile} profile in pyproject.toml"
                    )
                else:
                    continue
                if found not in out:  # `from x import a, b` is one finding
                    out.append(found)
    return out


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_import_is_declared_for_its_profile(pyproject) -> None:
    assert problems(ROOT, pyproject) == []


def test_profile_overrides_name_existing_modules() -> None:
    for rel, profile in PROFILE_OF.items():
        assert (ROOT / rel).exists(), f"PROFILE_OF names {rel}, which is gone: update the test"
        assert profile in locks.PROFILES


def test_an_undeclared_or_misplaced_import_is_reported(tmp_path: Path, pyproject) -> None:
    """The checker itself: what it must catch, in a made-up tree."""
    (tmp_path / "service" / "scoring").mkdir(parents=True)
    (tmp_path / "training").mkdir()
    (tmp_path / "service" / "api.py").write_text(
        "import uvicorn\n"  # declared for serve
        "import tensorflow\n"  # train only
        "import aiohttp\n"  # arrives through bentoml, declared nowhere
        "from service.scoring import output\n"  # a score module at module level
        "def later():\n"
        "    import service.scoring.output\n"  # lazily: fine
        "    import pandas\n"  # lazily, but still not serve's
    )
    (tmp_path / "service" / "scoring" / "output.py").write_text("import pandas\n")
    (tmp_path / "training" / "fit.py").write_text("import tensorflow\nfrom service import api\n")
    # contract/ is serving's too: fsspec is declared, boto3 only arrives through s3fs (and moto)
    (tmp_path / "contract").mkdir()
    (tmp_path / "contract" / "store.py").write_text(
        "def open_store():\n    import fsspec\n    import boto3\n"
    )
    found = problems(tmp_path, pyproject)
    assert len(found) == 5, found
    assert any("contract/store.py:3 imports boto3" in p and "serve profile" in p for p in found)
    assert any("api.py:2 imports tensorflow" in p and "serve profile" in p for p in found)
    assert any("api.py:3 imports aiohttp" in p for p in found)
    assert any("api.py:4 (serve) imports service.scoring.output (score)" in p for p in found)
    assert any("api.py:7 imports pandas" in p for p in found)
