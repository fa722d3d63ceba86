"""A/B of steps 2-6 (`UsGaapStore.build_from_db`: pairs, embeddings, scalers, PCA, triplets)
between two commits on one SQLite database, in one run, and whether they store the same bytes.

The machine is shared, so both sides run under the same load: both commits are exported
(`git archive`, as bench_ingest_ab.py does) and built alternately (base, head, base, ...), each
in a fresh process importing its own tree, from the same database into a new store file.
Reported per run: wall seconds, CPU seconds (the process, its threads and any helper
processes), each step's seconds, peak RSS; then each side's medians, and whether the two
sides' store files are byte-identical (`cmp` of the first round's files: same keys, payloads
and write order). Embeddings are bench_whole_sec.py's hash STAND-IN (the sentence model is
not what is measured).

The database: `--db PATH`; with `--archive ZIP` it is first written there by HEAD's
raw_records (`ingest_companyfacts`, not timed) unless it exists.

Run: `.venv/bin/python benchmarks/bench_step2_ab.py --base 869dbe2 --db /tmp/scale_0.1.sqlite
--archive /work/bench-data/whole_sec/scale_0.1/companyfacts.zip [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ingest_ab import export_commit  # noqa: E402

CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from bench_whole_sec import hash_embedder
from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.store import DataStore
from narrative_pipeline.us_gaap_store import UsGaapStore
def cpu():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
db = DbUsGaap("sqlite:///" + sys.argv[1])
data_store = DataStore(sys.argv[2])
store = UsGaapStore(data_store)
options = {"embedder": hash_embedder, "model_id": "bench-hash-384", "make_plots": False}
started, cpu_started = time.perf_counter(), cpu()
report = store.build_from_db(db, **options)
print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": cpu() - cpu_started,
                  "steps": report.timings, "facts": store.get_triplet_count(),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
data_store.close()
"""


def ensure_db(db: Path, archive: Path | None) -> None:
    """The database at `db`, written from `archive` by this tree's raw_records if missing."""
    if db.exists():
        return
    if archive is None:
        raise SystemExit(f"{db} does not exist: give --archive to write it")
    sys.path.insert(0, str(ROOT))
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    with tempfile.TemporaryDirectory() as work:
        data_store = DataStore(str(Path(work) / "ingest.bin"))
        UsGaapStore(data_store).ingest_companyfacts(archive, DbUsGaap(f"sqlite:///{db}"))
        data_store.close()


def one_run(tree: Path, db: Path, store: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", CHILD, str(db), str(store), str(tree / "benchmarks")]
    out = subprocess.run(command, check=True, cwd=tree, env=env, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--archive", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_db(args.db, args.archive)
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(dir=args.db.parent) as work:
        trees = {side: export_commit(getattr(args, side), Path(work) / side) for side in runs}
        first = {side: Path(work) / f"{side}_0.bin" for side in runs}
        for k in range(args.rounds):
            for side in runs:
                store = first[side] if k == 0 else Path(work) / f"{side}_{k}.bin"
                runs[side].append(one_run(trees[side], args.db, store))
                print(json.dumps({"side": side, "round": k, **runs[side][-1]}), flush=True)
                if k:
                    store.unlink()
        identical = filecmp.cmp(first["base"], first["head"], shallow=False)

    def median(side: str, pick) -> float:
        return round(statistics.median(pick(r) for r in runs[side]), 3)

    summary = {
        side: {
            "seconds": median(side, lambda r: r["seconds"]),
            "cpu_seconds": median(side, lambda r: r["cpu_seconds"]),
            "pairs_seconds": median(side, lambda r: r["steps"]["pairs"]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[side]),
        }
        for side in runs
    }
    summary["store_files_identical"] = identical
    summary["head_over_base_seconds"] = round(
        summary["head"]["seconds"] / summary["base"]["seconds"], 3
    )
    print(json.dumps(summary, indent=1))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
