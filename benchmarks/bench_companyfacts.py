"""Companyfacts reader speed: facts/s reading `.json.gz` files and a bulk `companyfacts.zip`,
this tree against another checkout (`--other`, e.g. `git worktree add /tmp/cf-base main`) in
ONE run, alternated, so a busy machine slows both sides alike.

Each measurement runs in a fresh child process that imports `narrative_pipeline` from the
tree measured and reads every file with `read_companyfacts` (no database): wall seconds, CPU
seconds of the reading process and its helper process together, facts kept, and entries read
(kept + repeats dropped + skipped); `facts/cpu-s` is the speed per core. The report checks
that both trees read the same number of facts per file (a speed-up that changes the result
is not one). `--env NAME=VALUE` (repeatable) measures this tree once more per setting, e.g.
NARRATIVE_INGEST_PROCESSES=0 (no helper process) or NARRATIVE_COMPANYFACTS_NATIVE=0 (the
orjson + Arrow fast path instead of the native scanner); `--reference` once more with the
reference path only (native scanner and fast path off, stdlib parser: the behaviour's definition).

    .venv/bin/python benchmarks/bench_companyfacts.py --other /tmp/cf-base --repeat 3
    .venv/bin/python benchmarks/bench_companyfacts.py --other /tmp/cf-base --ingest ZIP
    .venv/bin/python benchmarks/bench_companyfacts.py --env NARRATIVE_COMPANYFACTS_NATIVE=0 \
        --reference --env NARRATIVE_INGEST_PROCESSES=0 FILES
    NARRATIVE_INGEST_PROCESSES=0 .venv/bin/python benchmarks/bench_companyfacts.py \
        --other /tmp/cf-base --phases ZIP   # CPU per step of reading a member
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "companyfacts"
ZIP = Path("/work/bench-data/whole_sec/scale_0.01/companyfacts.zip")

PRELUDE = r"""
import json, os, resource, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
def cpu():  # this process and its reaped children (the zip member helper process)
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
def cpu_own():  # this process alone (the rest of cpu(): the helper process)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime
out = []
if os.environ.get("BENCH_REFERENCE_PATH") == "1":  # --reference: what the tests compare with
    from narrative_pipeline.readers import companyfacts
    os.environ["NARRATIVE_COMPANYFACTS_NATIVE"] = "0"
    companyfacts.fast_frames = lambda lists, result: False
    companyfacts.parse_json = json.loads
"""
READ = r"""
from narrative_pipeline.readers.companyfacts import read_companyfacts
for path in sys.argv[2:]:
    wall, used = time.perf_counter(), cpu()
    facts = entries = 0
    for result in read_companyfacts(path, None):
        facts += result.fact_count  # not len(result.facts): frames are built only when read
        entries += result.fact_count + result.duplicate_facts + result.skipped_cells
    wall = time.perf_counter() - wall
    time.sleep(0.5)  # the helper process exits and is reaped (its CPU counted), not timed
    out.append({"facts": facts, "entries": entries, "wall": wall, "cpu": cpu() - used})
print(json.dumps(out))
"""
INGEST = r"""
import functools
from narrative_pipeline.db.database import DbUsGaap
from narrative_pipeline.readers import companyfacts
from narrative_pipeline.us_gaap.ingest import load_companyfacts
parsed = [0.0]  # CPU seconds parsing members in this process (the rest: write, or helper)
@functools.wraps(companyfacts.read_zip_member)  # same name: the helper imports the original
def timed_read(*args, read=companyfacts.read_zip_member):
    started = time.process_time()
    try:
        return read(*args)
    finally:
        parsed[0] += time.process_time() - started
companyfacts.read_zip_member = timed_read
for path in sys.argv[2:]:
    with tempfile.TemporaryDirectory() as tmp:
        db = DbUsGaap(f"sqlite:///{tmp}/bench.sqlite")
        wall, used, own, parsed[0] = time.perf_counter(), cpu(), cpu_own(), 0.0
        report = load_companyfacts(path, db)
        wall = time.perf_counter() - wall
        time.sleep(0.5)
        out.append({"facts": report.facts_written, "entries": 0, "wall": wall,
                    "cpu": cpu() - used, "own": cpu_own() - own, "parse": parsed[0]})
print(json.dumps(out))
"""

# --phases: CPU seconds in each step of reading a zip member (timers around the functions a
# tree has; read member = the member's bytes: read and inflate), printed with the READ figures.
PHASES = r"""
import functools
from narrative_pipeline.readers import companyfacts, companyfacts_fast, companyfacts_native
phases = {}
def timer(module, name, label):
    if not hasattr(module, name):
        return
    original, phases[label] = getattr(module, name), 0.0  # printed in this order
    @functools.wraps(original)
    def timed(*args, **kwargs):
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            phases[label] = phases.get(label, 0.0) + time.process_time() - started
    setattr(module, name, timed)
timer(companyfacts, "_read_member", "read member (read, inflate)")
timer(companyfacts_native, "scan", "native scan")
timer(companyfacts_native, "_plain_columns", "columns by concept")
timer(companyfacts_native, "fill", "fill (dedup, filings, batch)")
timer(companyfacts_fast, "_sort_order", "of which the dedup sort")
timer(companyfacts_fast, "_filings", "of which the filings")
import atexit
atexit.register(lambda: print(json.dumps(phases), file=sys.stderr))
"""


def measure(
    tree: Path, env: dict[str, str], paths: list[Path], ingest: bool, phases: bool = False
) -> list[dict]:
    """One child process reading `paths` with the reader of `tree` (`ingest`: loading them
    into a new SQLite database with `load_companyfacts`; `phases`: also CPU per reading step,
    in the last row's "phases")."""
    script = PRELUDE + (PHASES if phases else "") + (INGEST if ingest else READ)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tree), *(str(p.resolve()) for p in paths)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        cwd=tree,  # the zip member helper process (`python -m`, the cwd first) imports `tree` too
    )
    rows = json.loads(done.stdout)
    if phases:
        rows[-1]["phases"] = json.loads(done.stderr.strip().splitlines()[-1])
    return rows


def default_files() -> list[Path]:
    """The shared real documents and the scale-0.01 synthetic bulk archive, where present."""
    files = sorted(SHARED.glob("*.json.gz")) if SHARED.is_dir() else []
    return files + ([ZIP] if ZIP.exists() else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: shared gz + scale 0.01 zip")
    parser.add_argument("--other", type=Path, help="another checkout to compare (the base)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE: also this tree")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ingest", action="store_true", help="load into SQLite (end to end)")
    parser.add_argument("--reference", action="store_true", help="also the reference path")
    parser.add_argument("--phases", action="store_true", help="CPU per reading step (all files)")
    args = parser.parse_args()
    files = args.files or default_files()
    if not files:
        sys.exit("no companyfacts files: pass some, or see default_files()")
    sides: dict[str, tuple[Path, dict[str, str]]] = {"this": (ROOT, {})}
    for setting in args.env:
        name, _, value = setting.partition("=")
        sides[f"this {setting}"] = (ROOT, {name: value})
    if args.reference:
        sides["this reference path"] = (ROOT, {"BENCH_REFERENCE_PATH": "1"})
    if args.other:
        sides["base"] = (args.other.resolve(), {})
    runs: dict[str, list[list[dict]]] = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, (tree, env) in sides.items():  # alternated: the load hits all sides alike
            runs[name].append(measure(tree, env, files, args.ingest, args.phases))
    report(files, runs)
    if args.phases:
        report_phases(runs)


def report(files: list[Path], runs: dict[str, list[list[dict]]]) -> None:
    """Median wall facts/s and facts per CPU second per file and side, speed-ups against the
    base, and a check that every side kept the same facts."""
    print(
        f"{'file':<26} {'side':<34} {'entries':>8} {'facts':>8} {'facts/s':>9} "
        f"{'facts/cpu-s':>11} {'entries/cpu-s':>13} {'wall':>6} {'cpu':>6}"
    )
    for i, path in enumerate(files):
        speed: dict[str, tuple[float, float]] = {}
        for name, rows in runs.items():
            wall = statistics.median(r[i]["wall"] for r in rows)
            cpu = statistics.median(r[i]["cpu"] for r in rows)
            row = rows[0][i]
            speed[name] = (row["facts"] / wall, row["facts"] / cpu)
            if "own" in row:  # --ingest: CPU-us per fact: parse, write (+ parse), helper
                us = {k: statistics.median(1e6 * r[i][k] / row["facts"] for r in rows)
                      for k in ("cpu", "own", "parse")}  # fmt: skip
                print(f"{'':<26} {name}: CPU-us/fact: ingesting process {us['own']:.2f} "
                      f"(parsing {us['parse']:.2f}, the rest {us['own'] - us['parse']:.2f}), "
                      f"helper {us['cpu'] - us['own']:.2f}")  # fmt: skip
            print(
                f"{path.name:<26} {name:<34} {row['entries']:>8} {row['facts']:>8} "
                f"{speed[name][0]:>9,.0f} {speed[name][1]:>11,.0f} "
                f"{row['entries'] / cpu:>13,.0f} {wall:>6.2f} {cpu:>6.2f}"
            )
        same = len({runs[name][0][i]["facts"] for name in runs}) == 1
        if "base" in speed:
            for name in runs:
                if name != "base":
                    wall_x = speed[name][0] / speed["base"][0]
                    cpu_x = speed[name][1] / speed["base"][1]
                    print(f"{'':<26} {name}: x{wall_x:.2f} wall, x{cpu_x:.2f} per CPU second")
        print(f"{'':<26} same facts on every side: {same}")


def report_phases(runs: dict[str, list[list[dict]]]) -> None:
    """Median CPU seconds per reading step and side, over all the files read."""
    for name, rows in runs.items():
        per_run = [r[-1]["phases"] for r in rows]
        steps = {k: statistics.median(p.get(k, 0.0) for p in per_run) for k in per_run[0]}
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))


if __name__ == "__main__":
    main()
