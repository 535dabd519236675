"""The layout's promises, checked on the source: arrows point one way and no module cycle exists."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stackgan_django", "generator", "policies", "lineage")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module this file imports, at any depth of the file (lazy imports count: a cycle through
    a function-level import is still a cycle), resolved to our module names or top-level packages."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_the_workflow_never_imports_the_task_module(graph):
    for name, imported in graph.items():
        if name.startswith("stackgan_django.services"):
            assert "stackgan_django.tasks" not in imported, f"{name} imports the task module"


def test_no_import_cycle_in_the_app(graph):
    app = {name: {i for i in imported if i in graph and i.startswith("stackgan_django")}
           for name, imported in graph.items() if name.startswith("stackgan_django")}
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    for name, imported in app.items():
        imported.discard(name)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(app.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(app):
        if node not in state:
            visit(node)


@pytest.mark.parametrize(("package", "forbidden"), [
    ("generator", ("django", "celery", "rest_framework", "stackgan_django", "policies")),
    ("policies", ("django", "celery", "torch", "transformers", "stackgan_django", "generator")),
    ("lineage", ("django", "torch", "numpy", "PIL", "stackgan_django", "generator", "policies")),
])
def test_arrows_point_one_way(graph, package, forbidden):
    for name, imported in graph.items():
        if name == package or name.startswith(package + "."):
            bad = sorted(i for i in imported if i.split(".")[0] in forbidden)
            assert not bad, f"{name} imports {bad}"


def test_the_lineage_schema_is_standard_library_only(graph):
    stdlib = set(sys.stdlib_module_names) | {"lineage", "__future__"}
    for name, imported in graph.items():
        if name.split(".")[0] == "lineage":
            assert all(i.split(".")[0] in stdlib for i in imported), f"{name} imports {imported - stdlib}"
