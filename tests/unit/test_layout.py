"""The dependency arrows of DESIGN.md §3, an import graph without cycles, the public surface of
the geometry rules and the packaging of the generic top-level names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grimp
import pytest
from support import REPO

import hooks
import inspector
import reports


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports not installed: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run(
        [exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def test_generic_top_level_names_belong_to_this_distribution() -> None:
    for package in (hooks, reports, inspector):
        assert Path(package.__file__).resolve().is_relative_to(REPO), package.__file__


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_import_graph_has_no_cycle() -> None:
    """No module of inspector, hooks or reports imports itself through others (a package
    ``__init__`` counts as a module: ``from . import x`` in a submodule is an arrow to it)."""
    graph = grimp.build_graph("inspector", "hooks", "reports", cache_dir=None)
    assert {"hooks.geometry", "hooks.geometry._infer", "inspector._version"} <= graph.modules
    cycles = _cycles(graph)
    chains = [graph.find_shortest_chain(c[0], c[1]) for c in cycles]
    assert not cycles, f"import cycles: {cycles} (e.g. {chains})"


def test_cycle_finder_finds_a_cycle() -> None:
    arrows = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    graph = SimpleNamespace(
        modules={"a", "b", "c", "d"},
        find_modules_directly_imported_by=lambda module: arrows.get(module, set()),
    )
    assert _cycles(graph) == [["a", "b", "c"]]  # type: ignore[arg-type]


RULE_MODULES = ("_plain", "_windowed", "_pyramid", "_hybrid")


def test_geometry_rule_modules_use_the_public_surface_only() -> None:
    """A rule module imports, from the rest of the project, only names that
    ``hooks.geometry`` exports (from their defining sibling module: importing the package
    itself would be an import cycle, the package imports the rule modules)."""
    import hooks.geometry

    public = set(hooks.geometry.__all__)
    for name in RULE_MODULES:
        path = REPO / "hooks" / "geometry" / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or "hooks" in (node.module or "")):
                assert node.level == 1 and node.module and node.module.startswith("_"), (
                    f"{path.name}: from {'.' * node.level}{node.module} import ..."
                )
                private = {a.name for a in node.names} - public
                assert not private, f"{path.name} imports non-public names {sorted(private)}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in PROJECT for a in node.names), path.name


PROJECT = ("hooks", "inspector", "reports")


def test_nothing_outside_hooks_imports_private_geometry_modules() -> None:
    """Geometry is used through ``hooks`` / ``hooks.geometry`` only, everywhere else."""
    offenders = []
    for folder in ("inspector", "reports", "benchmarks", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for module in names:
                    if module.startswith("hooks.geometry._") or module in (
                        "hooks._geometry",
                        "hooks._families",
                        "hooks._family_rules",
                    ):
                        offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert not offenders, offenders
