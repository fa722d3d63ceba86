"""Companyfacts reader speed: facts/s reading `.json.gz` files and a bulk `companyfacts.zip`,
this tree against another checkout (`--other`, e.g. `git worktree add /tmp/cf-base main`) in
ONE run, alternated, so a busy machine slows both sides alike.

Each measurement runs in a fresh child process that imports `narrative_pipeline` from the
tree measured and reads every file with `read_companyfacts` (no database): wall and CPU
seconds, facts kept, and entries read (kept + repeats dropped + skipped). The child also
checks that both trees read the same number of facts per file (a speed-up that changes the
result is not one).

    .venv/bin/python benchmarks/bench_companyfacts.py --other /tmp/cf-base --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "companyfacts"
ZIP = Path("/work/bench-data/whole_sec/scale_0.01/companyfacts.zip")

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from narrative_pipeline.readers.companyfacts import read_companyfacts
out = []
for path in sys.argv[2:]:
    wall, cpu = time.perf_counter(), time.process_time()
    facts = entries = 0
    for result in read_companyfacts(path, None):
        facts += len(result.facts)
        entries += len(result.facts) + result.duplicate_facts + result.skipped_cells
    out.append({"path": path, "facts": facts, "entries": entries,
                "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})
print(json.dumps(out))
"""


def measure(tree: Path, paths: list[Path]) -> list[dict]:
    """One child process reading `paths` with the reader of `tree`."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def default_files() -> list[Path]:
    """The shared real documents and the scale-0.01 synthetic bulk archive, where present."""
    files = sorted(SHARED.glob("*.json.gz")) if SHARED.is_dir() else []
    return files + ([ZIP] if ZIP.exists() else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: shared gz + scale 0.01 zip")
    parser.add_argument("--other", type=Path, help="another checkout to compare (the base)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = args.files or default_files()
    if not files:
        sys.exit("no companyfacts files: pass some, or see default_files()")
    trees = {"this": ROOT, **({"other": args.other.resolve()} if args.other else {})}
    runs: dict[str, list[list[dict]]] = {name: [] for name in trees}
    for _ in range(args.repeat):
        for name, tree in trees.items():  # alternated: the load hits both sides alike
            runs[name].append(measure(tree, files))
    report(files, runs)


def report(files: list[Path], runs: dict[str, list[list[dict]]]) -> None:
    """Median facts/s per file and tree, the speed-up, and a check that facts agree."""
    print(f"{'file':<40} {'tree':<6} {'entries':>9} {'facts':>9} {'facts/s':>10} {'cpu s':>7}")
    medians: dict[tuple[str, str], float] = {}
    for i, path in enumerate(files):
        for name, rows in runs.items():
            row = rows[0][i]
            wall = statistics.median(r[i]["wall"] for r in rows)
            cpu = statistics.median(r[i]["cpu"] for r in rows)
            medians[name, path.name] = row["facts"] / wall
            print(
                f"{path.name:<40} {name:<6} {row['entries']:>9} {row['facts']:>9} "
                f"{row['facts'] / wall:>10,.0f} {cpu:>7.2f}"
            )
        if "other" in runs:
            same = runs["this"][0][i]["facts"] == runs["other"][0][i]["facts"]
            ratio = medians["this", path.name] / medians["other", path.name]
            print(f"{'':<40} speed-up x{ratio:.2f}; same facts: {same}")


if __name__ == "__main__":
    main()
