"""A/B of `bench_ingest.py` between two commits, in one run.

The machine is shared, so a ratio is only meaningful when both sides run under the same load:
both commits are exported (`git archive`, no worktree) into a temp folder and the two trees'
bench_ingest.py run alternately (base, head, base, head, ...) on the same corpus size, each
importing its own tree (PYTHONPATH). Prints every rate and each side's median.

`--files-only`: instead of whole bench_ingest.py runs (steps 2-6 included, a warm-up and a
corpus copy per run), time only step 1, `load_csv_files(corpus, fresh SQLite database)`, in a
fresh process per run, alternating base/head `--rounds` times on one shared corpus: far less
time per sample, so many more alternations under the same load (for changes to step 1).

Run: `.venv/bin/python benchmarks/bench_ingest_ab.py --base 4e82c29 [--head HEAD]
[--triplets 2000000] [--rounds 2] [--repeat 3] [--files-only]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NARRATIVE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def export_commit(commit: str, into: Path) -> Path:
    """The tree of `commit` under `into` (git archive | tar: the repository is not touched)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def one_side(tree: Path, triplets: int, repeat: int, workdir: Path) -> list[float]:
    """bench_ingest.py of `tree` (embedded backend), its per-run ingestion rates."""
    env = {**os.environ, "PYTHONPATH": str(tree), "NARRATIVE_SHARED_DATA": str(SHARED)}
    out = workdir / "result.json"
    command = [
        sys.executable,
        str(tree / "benchmarks" / "bench_ingest.py"),
        "--triplets",
        str(triplets),
        "--backends",
        "embedded",
        "--repeat",
        str(repeat),
        "--workdir",
        str(workdir),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    [row] = json.loads(out.read_text())["runs"]
    if "error" in row:
        raise RuntimeError(f"{tree}: {row['error']}")
    return row.get("repeat_ingest_triplets_per_s") or [row["ingest_triplets_per_s"]]


FILES_ONLY_CHILD = """
import json, resource, sys, time
from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.us_gaap.ingest import load_csv_files
db = DbUsGaap("sqlite:///" + sys.argv[2])
def cpu():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
started, cpu_started = time.perf_counter(), cpu()
report = load_csv_files(sys.argv[1], db)
print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": cpu() - cpu_started,
                  "facts": report.facts_written}))
"""


def files_only(tree: Path, corpus: Path, database: Path) -> tuple[float, float]:
    """Step 1 of `tree` on `corpus` into a new SQLite file, in a fresh process: facts per
    wall second and per CPU second (this process and its CSV worker: less sensitive to the
    other load on a shared machine than wall time)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    for leftover in database.parent.glob(database.name + "*"):
        leftover.unlink()
    command = [sys.executable, "-c", FILES_ONLY_CHILD, str(corpus), str(database)]
    done = subprocess.run(command, check=True, cwd=tree, env=env, capture_output=True, text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return row["facts"] / row["seconds"], row["facts"] / row["cpu_seconds"]


def run_files_only(trees: dict[str, Path], args: argparse.Namespace, tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_ingest import build_corpus

    corpus = Path(build_corpus(args.triplets, tmp / "corpus")["root"])
    rates: dict[str, list[float]] = {side: [] for side in trees}
    cpu_rates: dict[str, list[float]] = {side: [] for side in trees}
    for _ in range(args.rounds):
        for side, tree in trees.items():
            wall, cpu = files_only(tree, corpus, tmp / "facts.sqlite")
            rates[side].append(wall)
            cpu_rates[side].append(cpu)
            print(side, "wall", [round(r) for r in rates[side]], flush=True)
            print(side, "cpu ", [round(r) for r in cpu_rates[side]], flush=True)
    medians = {side: statistics.median(r) for side, r in cpu_rates.items()}
    print(f"head/base median facts per CPU second: {medians['head'] / medians['base']:.3f}")
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="commit to compare against")
    parser.add_argument("--head", default="HEAD", help="commit measured against --base")
    parser.add_argument("--triplets", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="base/head alternations")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per side per round")
    parser.add_argument("--files-only", action="store_true", help="time step 1 only (see above)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ab_") as tmp:
        trees = {
            "base": export_commit(args.base, Path(tmp) / "base"),
            "head": export_commit(args.head, Path(tmp) / "head"),
        }
        rates: dict[str, list[float]] = {"base": [], "head": []}
        if args.files_only:
            rates = run_files_only(trees, args, Path(tmp))
        for round_no in range(0 if args.files_only else args.rounds):
            for side, tree in trees.items():
                work = Path(tmp) / f"work_{side}_{round_no}"
                rates[side] += one_side(tree, args.triplets, args.repeat, work)
                print(side, [round(r) for r in rates[side]], flush=True)
    medians = {side: statistics.median(r) for side, r in rates.items()}
    print(json.dumps({"rates": rates, "medians": medians}))
    print(f"head/base median ingestion rate: {medians['head'] / medians['base']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
