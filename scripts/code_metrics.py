"""Print the figures issue 14 tracks, for a before/after note: largest modules and functions,
`db`/`store`/`data_store` parameters typed `Any`, import cycles and layer violations.

    .venv/bin/python scripts/code_metrics.py [--top N]

The import graph is the one `narrative_pipeline_tests/test_architecture.py` checks (all imports,
function-level ones included, `if TYPE_CHECKING:` blocks left out). mypy and radon are run
separately (see scripts/mypy_baseline.sh; `radon cc -s -n C narrative_pipeline`).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "narrative_pipeline"
SEAM_NAMES = {"db", "store", "data_store"}


def _architecture_module():
    path = REPO / "narrative_pipeline_tests" / "test_architecture.py"
    spec = importlib.util.spec_from_file_location("_architecture", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _is_any(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    text = ast.unparse(annotation)
    return text in {"Any", "typing.Any", "'Any'"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seams", action="store_true", help="list the Any-typed seams")
    args = parser.parse_args()

    files = sorted(PACKAGE.rglob("*.py"))
    sizes, functions, any_seams = [], [], []
    for path in files:
        text = path.read_text()
        rel = path.relative_to(REPO)
        sizes.append((len(text.splitlines()), str(rel)))
        for fn in _functions(ast.parse(text)):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            functions.append((length, f"{rel}:{fn.lineno} {fn.name}"))
            params = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
            any_seams += [
                f"{rel}:{fn.lineno} {fn.name}({p.arg})"
                for p in params
                if p.arg in SEAM_NAMES and _is_any(p.annotation)
            ]

    print(f"modules over 600 lines: {sum(n > 600 for n, _ in sizes)}")
    print(f"largest modules (lines), top {args.top}:")
    for n, rel in sorted(sizes, reverse=True)[: args.top]:
        print(f"  {n:5d}  {rel}")
    print(f"largest functions (lines), top {args.top}:")
    for n, where in sorted(functions, reverse=True)[: args.top]:
        print(f"  {n:5d}  {where}")
    print(f"db/store/data_store parameters typed Any: {len(any_seams)}")
    if args.seams:
        print("\n".join(f"  {where}" for where in any_seams))

    arch = _architecture_module()
    graph = arch.import_graph()
    file_cycles = arch.cycles(graph)
    package_cycles = arch.cycles(arch.package_graph(graph))
    violations = arch.layer_violations(graph)
    print(f"import cycles between files: {len(file_cycles)} {sorted(file_cycles)}")
    print(f"import cycles between packages: {len(package_cycles)} {sorted(package_cycles)}")
    print(f"imports pointing up a layer: {len(violations)} {sorted(violations)}")


if __name__ == "__main__":
    sys.exit(main())
