"""The packages' import graph, read from the source with ast (imports inside functions included):
kg/ imports nothing from app/, the domain pack nothing from the service, and no module imports itself in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("app", "kg", "domain", "training")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO_ROOT / package).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (``from a.b import c`` counts as a.b.c when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


MODULES = _modules()
GRAPH = {name: _imports(path, set(MODULES)) - {name} for name, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def test_the_graph_was_read() -> None:
    assert "app.main" in GRAPH and "domain.pack" in GRAPH["app.main"] and "kg.pack" in GRAPH["domain.pack"]


def test_kg_imports_nothing_from_app() -> None:
    offenders = {m: sorted(i for i in deps if _package(i) == "app") for m, deps in GRAPH.items() if _package(m) == "kg"}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_domain_pack_imports_nothing_from_the_service() -> None:
    domain = {m: sorted(i for i in d if _package(i) == "app") for m, d in GRAPH.items() if _package(m) == "domain"}
    assert {m: d for m, d in domain.items() if d} == {}
    # the graph layer knows rows, not packs: only its command line reads a whole pack
    kg = {m: sorted(i for i in d if _package(i) == "domain") for m, d in GRAPH.items() if _package(m) == "kg"}
    assert {m: d for m, d in kg.items() if d and m != "kg.cli"} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_app_has_no_import_cycle() -> None:
    app_graph = {m: {d for d in deps if _package(d) == "app"} for m, deps in GRAPH.items() if _package(m) == "app"}
    assert _cycles(app_graph) == []


def test_no_module_of_the_project_is_in_an_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
