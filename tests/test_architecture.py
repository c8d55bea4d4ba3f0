"""The folder tree's rules: allowed import directions, no import cycles, no private names
imported across modules, comments without ``# NOTE`` prefixes.

The directions are import-linter contracts in pyproject.toml ([tool.importlinter]); cycles are
the strongly connected components of grimp's module graph (scipy finds them), lazy and
TYPE_CHECKING imports included.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import grimp
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "service", "training")
SOURCES = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "generated" not in p.parts]


def test_import_contracts_hold() -> None:
    # In a process of its own: import-linter reconfigures logging in the process that runs it.
    script = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others."""
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = [
        (index[m], index[t])
        for m in modules
        for t in graph.find_modules_directly_imported_by(m)
        if t in index
    ]
    rows, cols = zip(*edges, strict=True) if edges else ((), ())
    matrix = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(modules),) * 2)
    count, labels = connected_components(matrix, directed=True, connection="strong")
    groups = [[modules[i] for i in np.flatnonzero(labels == c)] for c in range(count)]
    return sorted(g for g in groups if len(g) > 1)


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False)
    assert import_cycles(graph) == []


def test_a_cycle_is_found() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]


def private_imports(path: Path) -> list[str]:
    """``from project.module import _name`` and ``module._name`` on an imported project module."""
    tree = ast.parse(path.read_text(), str(path))
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
                aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_private_names_cross_modules() -> None:
    users = [p for d in ("tests", "loadtests", "scripts") for p in (ROOT / d).rglob("*.py")]
    assert [hit for p in [*SOURCES, *users] for hit in private_imports(p)] == []


def test_a_private_import_is_found(tmp_path: Path) -> None:
    sample = ROOT / "service" / "_sample_for_test.py"
    sample.write_text("from service.protocol import params\nparams._hidden(1)\n")
    try:
        assert private_imports(sample) == ["service/_sample_for_test.py:2 params._hidden"]
    finally:
        sample.unlink()


def note_comments(path: Path) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [
        f"{path.relative_to(ROOT)}:{tok.start[0]}"
        for tok in tokens
        if tok.type == tokenize.COMMENT and re.match(r"#\s*NOTE\b", tok.string)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_comments_say_why_without_a_note_prefix(package: str) -> None:
    files = [p for p in SOURCES if p.relative_to(ROOT).parts[0] == package]
    assert [hit for p in files for hit in note_comments(p)] == []
