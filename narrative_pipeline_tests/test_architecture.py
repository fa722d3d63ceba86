"""The package's import graph keeps its shape: no cycles, and no layer imports a higher one.

The graph is built from the source with `ast` (no import is executed): every `import` and
`from ... import` statement counts, including those inside functions, because a function-level
import is still a dependency (it only hides the cycle from the interpreter until the call).
Imports under `if TYPE_CHECKING:` are left out: they never run, and they are how a type
annotation refers to a higher module without depending on it.

Known violations of today's code are listed in `KNOWN_VIOLATIONS`; that set may only shrink.
A listed edge that is no longer a violation fails the test, so that it is removed from the list.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "narrative_pipeline"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Layer of each top-level part of the package (package folder or module), lowest first. A module
# may import its own layer or a lower one. Same layers as ARCHITECTURE.md.
LAYERS: dict[str, int] = {
    # shared by every layer, imports nothing of the project
    "core": 0,
    "pipe_worker": 0,
    # bottom: the key/value store and the database
    "store": 1,
    "db": 1,
    # data layer
    "readers": 2,
    "us_gaap": 2,
    "us_gaap_store": 2,
    "preprocessing": 2,
    "sample_data": 2,
    # training
    "training": 3,
    # Dagster definitions (thin)
    "assets": 4,
    "resources": 4,
    "sensors": 4,
    "schedules": 4,
    "checks": 4,
    "definitions": 4,
    # entry points: the command line and the demo drive every layer
    "cli": 5,
    "ingest_cli": 5,
    "demo": 5,
    "__init__": 5,
}

# What breaks the rules today (measured at 4e82c29). These sets may only shrink: fix an entry,
# then delete it (the tests fail while a fixed entry is still listed).
# (importing module, imported module) edges that point up a layer:
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
# Import cycles between files, each the sorted tuple of its modules:
KNOWN_FILE_CYCLES: set[tuple[str, ...]] = set()  # csv_process <-> ingest: fixed (read_ahead.py)
# Import cycles between top-level parts (packages and top-level modules):
KNOWN_PACKAGE_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if _is_type_checking_block(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a project module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules):
    if isinstance(node, ast.Import):
        return [_resolve(alias.name, modules) for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    found = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.append(submodule if submodule in modules else _resolve(base, modules))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (self-imports left out)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _import_nodes(tree):
            edges.update(t for t in _targets(node, name, is_package, modules) if t)
        edges.discard(name)
        graph[name] = edges
    return graph


def part_of(module: str) -> str:
    """The top-level part of the package a module belongs to (`db`, `cli`, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (src, dst)
        for src, targets in graph.items()
        for dst in targets
        if LAYERS[part_of(dst)] > LAYERS[part_of(src)]
    }


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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
                found.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between top-level parts (`db`, `readers`, `cli`, ...)."""
    parts: dict[str, set[str]] = {}
    for src, targets in graph.items():
        out = parts.setdefault(part_of(src), set())
        out.update(part_of(t) for t in targets if part_of(t) != part_of(src))
    return parts


def test_every_part_of_the_package_has_a_layer():
    unknown = {part_of(m) for m in project_modules()} - set(LAYERS)
    assert not unknown, f"give these a layer in LAYERS (and in ARCHITECTURE.md): {sorted(unknown)}"


def test_the_walker_sees_function_level_imports_and_skips_type_checking_ones():
    source = """
from typing import TYPE_CHECKING
import narrative_pipeline.store
if TYPE_CHECKING:
    from narrative_pipeline.training import model
def f():
    from narrative_pipeline.readers import base
    class C:
        def g(self):
            import narrative_pipeline.db.models
"""
    found = {
        (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name)
        for node in _import_nodes(ast.parse(source))
    }
    assert found == {
        "typing",
        "narrative_pipeline.store",
        "narrative_pipeline.readers",
        "narrative_pipeline.db.models",
    }
    modules = project_modules()
    [target] = _targets(
        ast.parse("from . import models").body[0], "narrative_pipeline.db", True, modules
    )
    assert target == "narrative_pipeline.db.models"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {("a", "b", "c")}
    assert layer_violations({"narrative_pipeline.db.x": {"narrative_pipeline.training.y"}}) == {
        ("narrative_pipeline.db.x", "narrative_pipeline.training.y")
    }


def test_no_import_cycles_between_files():
    found = cycles(import_graph())
    new = found - KNOWN_FILE_CYCLES
    assert not new, f"import cycles between files: {sorted(new)}"
    gone = KNOWN_FILE_CYCLES - found
    assert not gone, f"fixed, remove from KNOWN_FILE_CYCLES: {sorted(gone)}"


def test_no_import_cycles_between_packages():
    found = cycles(package_graph(import_graph()))
    new = found - KNOWN_PACKAGE_CYCLES
    assert not new, f"import cycles between packages: {sorted(new)}"
    gone = KNOWN_PACKAGE_CYCLES - found
    assert not gone, f"fixed, remove from KNOWN_PACKAGE_CYCLES: {sorted(gone)}"


def test_no_layer_imports_a_higher_one():
    found = layer_violations(import_graph())
    new = found - KNOWN_VIOLATIONS
    assert not new, "imports pointing up a layer (move the shared code down, or invert it):\n" + (
        "\n".join(f"  {a} -> {b}" for a, b in sorted(new))
    )
    gone = KNOWN_VIOLATIONS - found
    assert not gone, f"no longer violations, remove from KNOWN_VIOLATIONS: {sorted(gone)}"
