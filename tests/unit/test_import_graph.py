"""The import graph of ``scheduler`` and ``cross_instance``: no cycle, and one direction only.

Read from the source with ``ast``, so every import counts: at module level, under
``TYPE_CHECKING`` and inside functions (an import deferred into a function still ties the two
modules together; it only hides the circle from the interpreter).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scheduler", "cross_instance")

Graph = dict[str, set[str]]


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    """Module -> the modules of ``packages`` it imports anywhere in its source."""
    files = {
        _module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }
    graph: Graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
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

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_packages_have_no_import_cycle() -> None:
    assert cycles(import_graph(ROOT, PACKAGES)) == []


def test_cross_instance_never_imports_scheduler() -> None:
    graph = import_graph(ROOT, PACKAGES)
    upward = {
        module: sorted(t for t in targets if t.split(".")[0] == "scheduler")
        for module, targets in graph.items()
        if module.split(".")[0] == "cross_instance"
    }
    assert {module: targets for module, targets in upward.items() if targets} == {}


def test_the_wire_types_do_not_import_the_scheduling_core() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert not {t for t in graph["scheduler.protocol"] if t.startswith("scheduler.scheduling")}


def test_the_walk_sees_the_edges_the_gateways_really_have() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert {"scheduler.jobs", "scheduler.outbox"} <= graph["scheduler.session_gateway"]
    assert "scheduler.protocol" in graph["scheduler.messages"]  # `from scheduler import protocol`
    assert "cross_instance.envelope" in graph["cross_instance.runtime"]


def test_a_circle_hidden_in_functions_and_type_checking_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    )
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
