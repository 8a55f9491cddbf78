"""The shipped package's imports point one way: config → sessions / oidc → services → web / routes / proxy → app → cli.

Every ``import`` and ``from … import`` in bff/ (at module level, inside functions, under TYPE_CHECKING) is
read from the source with :mod:`ast`. A module may import its own layer or a lower one, never a higher one,
and the graph has no cycle at all (a cycle inside one layer is still a cycle). The checker itself is tested
on small graphs, so a checker that passes everything fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bff"

# Lowest first. A module belongs to the longest prefix listed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("bff", "bff.config", "bff.errors", "bff.logs", "bff.metrics", "bff.tracing"),
    ("bff.sessions", "bff.oidc"),
    ("bff.services",),
    ("bff.web", "bff.routes", "bff.proxy"),
    ("bff.app",),
    ("bff.cli", "bff.__main__"),
)


def layer_of(module: str) -> int:
    best, rank = "", -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The bff modules ``path`` imports (``from bff import metrics`` counts as ``bff.metrics``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] in ("bff", "bff_dev"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in ("bff", "bff_dev"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def package_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) - {module_name(p)} for p in paths}


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if target in graph and layer_of(target) > layer_of(module)
    )


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, set())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_imports_upwards() -> None:
    graph = package_graph()
    assert len(graph) > 30  # the walk found the package
    assert upward_imports(graph) == []


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(package_graph()) == []


def test_the_package_never_imports_the_development_tools() -> None:
    # bff.cli loads bff_dev by name (importlib), only for `bff dev` / `bff emulator`, and says how to get it.
    offenders = {m: sorted(t for t in ts if t.startswith("bff_dev")) for m, ts in package_graph().items()}
    assert {m: ts for m, ts in offenders.items() if ts} == {}


def test_every_module_is_in_a_layer() -> None:
    for module in package_graph():
        layer_of(module)


@pytest.mark.parametrize(
    ("graph", "upward", "cyclic"),
    [
        ({"bff.config": set(), "bff.sessions.model": {"bff.config"}}, [], []),
        ({"bff.config": {"bff.app"}, "bff.app": set()}, ["bff.config (layer 0) imports bff.app (layer 4)"], []),
        (
            {"bff.web.a": {"bff.routes.b"}, "bff.routes.b": {"bff.proxy.c"}, "bff.proxy.c": {"bff.web.a"}},
            [],
            [["bff.proxy.c", "bff.routes.b", "bff.web.a"]],
        ),
    ],
)
def test_the_checker_sees_upward_imports_and_cycles(
    graph: dict[str, set[str]], upward: list[str], cyclic: list[list[str]]
) -> None:
    assert upward_imports(graph) == upward
    assert cycles(graph) == cyclic


def test_the_walk_reads_function_level_and_from_package_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from bff import metrics\n\ndef f():\n    import bff.app\n    from bff.sessions.store import X\n")
    assert imports_of(source, {"bff.metrics", "bff.app", "bff.sessions.store"}) == {
        "bff.metrics",
        "bff.app",
        "bff.sessions.store",
    }
