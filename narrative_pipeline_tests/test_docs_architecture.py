"""ARCHITECTURE.md matches the tree: every package and top-level module of narrative_pipeline is
named in its tree and its layer table, the layer table agrees with the one the import-graph test
enforces, and the documents it links to exist."""

from __future__ import annotations

import re
from pathlib import Path

from narrative_pipeline_tests.test_architecture import LAYERS

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "narrative_pipeline"
DOC = REPO_ROOT / "ARCHITECTURE.md"


def packages() -> list[str]:
    return sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def top_level_modules() -> list[str]:
    return sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def tree_block() -> str:
    return re.search(r"```\nnarrative_pipeline/\n(.*?)```", DOC.read_text(), re.S).group(1)


def layer_table() -> dict[str, int]:
    """part (`db`, `cli`, ...) -> layer number, from the table's rows."""
    parts: dict[str, int] = {}
    for number, cells in re.findall(r"^\| (\d) [^|]*\| (.*) \|$", DOC.read_text(), re.M):
        for name in re.findall(r"`([\w.]+)/?`", cells):
            parts[name.removesuffix(".py")] = int(number)
    return parts


def test_every_package_is_in_the_tree():
    tree = tree_block()
    missing = [name for name in packages() if not re.search(rf"(^| ){name}/", tree, re.M)]
    assert not missing, f"ARCHITECTURE.md's tree lacks the packages {missing}"


def test_every_top_level_module_is_in_the_tree():
    tree = tree_block()
    missing = [name for name in top_level_modules() if not re.search(rf"\b{name}\b", tree)]
    assert not missing, f"ARCHITECTURE.md's tree lacks the modules {missing}"


def test_the_layer_table_is_the_one_the_import_test_enforces():
    documented = layer_table()
    enforced = {part: layer for part, layer in LAYERS.items() if part != "__init__"}
    assert documented == enforced


def test_linked_documents_exist():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", DOC.read_text())
    assert links
    for link in links:
        assert (REPO_ROOT / link).exists(), link
