"""Step 1 alone (CSV files -> database) of this checkout against another checkout, in one run
(issue 12: the data-safety rules add a per-ticker source check and `filing_source` rows to every
write; this measures what they cost).

Builds bench_ingest.py's corpus (copies of the real CSVs under new tickers), then, alternating
the two code trees, each in a fresh child process with a fresh SQLite database:
1. first load of the corpus (facts/s);
2. reload after every file changed (content appended: each file is read and written again).
Prints the rates and the medians as JSON.

Run: `.venv/bin/python benchmarks/bench_ingest_files.py --other /tmp/base [--triplets 1000000]
[--repeat 3]`, where /tmp/base is e.g. `git worktree add /tmp/base 4e82c29` (its imports
resolve from there; the same .venv runs both).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = """
import json, sys, time
from pathlib import Path
import narrative_pipeline
assert narrative_pipeline.__file__.startswith(sys.argv[1]), narrative_pipeline.__file__
from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.us_gaap.ingest import load_csv_files
corpus, db_path = Path(sys.argv[2]), sys.argv[3]
db = DbUsGaap("sqlite:///" + db_path)
out = {}
for phase in ("first", "reload"):
    if phase == "reload":
        for path in sorted(corpus.rglob("*.csv")):
            with path.open("a") as fh:
                fh.write("\\n")  # same filings, new content: read and written again
    started = time.perf_counter()
    report = load_csv_files(corpus, db)
    seconds = time.perf_counter() - started
    assert report.files_loaded == report.files_seen and not report.skipped_files, report
    out[phase] = report.facts_written / seconds
print(json.dumps(out))
"""


def measure(code: Path, corpus: Path, work: Path) -> dict:
    """One child process: a fresh copy of the corpus and a fresh database."""
    import shutil

    copy = work / "corpus"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(corpus, copy)
    db = work / "bench.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    # PYTHONPATH (not sys.path) so the CSV worker processes import the same tree.
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(code), str(copy), str(db)],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from bench_ingest import build_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="the other checkout")
    parser.add_argument("--triplets", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ingest_files_") as tmp:
        work = Path(tmp)
        info = build_corpus(args.triplets, work / "source")
        trees = {"this": ROOT, "other": args.other.resolve()}
        rates: dict[str, dict[str, list[float]]] = {k: {"first": [], "reload": []} for k in trees}
        for _ in range(args.repeat):
            for name, code in trees.items():
                for phase, rate in measure(code, work / "source", work).items():
                    rates[name][phase].append(round(rate))
        medians = {
            name: {phase: statistics.median(v) for phase, v in phases.items()}
            for name, phases in rates.items()
        }
        print(json.dumps({"corpus": info, "rates": rates, "median_facts_per_s": medians}))


if __name__ == "__main__":
    main()
