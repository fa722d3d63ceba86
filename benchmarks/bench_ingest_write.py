"""CPU cost per fact of raw_records' non-parsing work and of step 2 (issue 13, helper 13w).

The machine is shared, so both figures are CPU seconds of this process (not wall clock):
1. The database write of a companyfacts zip, with the members parsed beforehand (parsing is
   the reader's, measured by bench_companyfacts.py): one transaction per member (what
   ingestion did before) against `us_gaap/ingest.py`'s batches of RESULT_BATCH_TICKERS
   members, alternated `--rounds` times in one run, each into a fresh SQLite file; then
   `ReadResult.fact_columns()` (the readers' frames -> write columns) alone.
   `--ingest`: whole ingestions of the zip (parsing included, the reader's helper process as
   configured), one member per transaction against the batches, alternated: wall clock and
   the ingesting process's CPU.
2. `--pairs-db DB`: step 2 (`pairs_step.build_concept_unit_pairs`) over an existing SQLite
   database into a fresh store file, `--rounds` times: facts per CPU second.

Run: `.venv/bin/python benchmarks/bench_ingest_write.py --zip /work/bench-data/13w/scale_0.01/companyfacts.zip
[--ingest] [--pairs-db facts.sqlite] [--rounds 3]` (the zip: `bench_whole_sec.py`'s generator).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _write_cpu(results: list, batch: int, work: Path) -> float:
    """CPU seconds to write `results` into a new database: batch 0 = one member at a time."""
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.us_gaap import ingest
    from narrative_pipeline.us_gaap.reports import IngestReport

    folder = Path(tempfile.mkdtemp(dir=work))
    db = DbUsGaap(f"sqlite:///{folder / 'facts.sqlite'}")
    started = time.process_time()
    if batch == 0:
        for result in results:
            db.replace_ticker(result)
    else:
        ingest.RESULT_BATCH_TICKERS = batch
        writer = ingest._ResultBatch(IngestReport(source="bench"), db, False)
        for result in results:
            writer.add(result)
        writer.flush()
    seconds = time.process_time() - started
    db.close()
    shutil.rmtree(folder)
    return seconds


def bench_writes(archive: Path, rounds: int, work: Path) -> None:
    from bench_whole_sec import TAXONOMY

    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.db.taxonomy import load_taxonomy
    from narrative_pipeline.readers import read_companyfacts
    from narrative_pipeline.us_gaap import ingest

    concepts = None
    if TAXONOMY.exists():
        taxonomy = DbUsGaap("sqlite://")
        load_taxonomy(TAXONOMY, taxonomy)
        concepts = taxonomy.taxonomy_concepts()
    results = [r for r in read_companyfacts(archive, concepts) if not r.error]
    facts = sum(len(r.facts) for r in results)
    batch = ingest.RESULT_BATCH_TICKERS
    print(f"{len(results)} members, {facts:,} facts; CPU seconds of the write alone")
    for _ in range(rounds):
        for label, size in (("one member per transaction", 0), (f"batches of {batch}", batch)):
            cpu = _write_cpu(results, size, work)
            print(f"  {label}: {cpu:.2f} cpu-s = {facts / cpu:,.0f} facts/cpu-s", flush=True)
    started = time.process_time()
    for result in results:
        result.fact_columns()
    cpu = time.process_time() - started
    print(f"  of which fact_columns(): {cpu:.2f} cpu-s = {facts / cpu:,.0f} facts/cpu-s")


def bench_ingest(archive: Path, rounds: int, work: Path) -> None:
    """Whole `load_companyfacts` of the zip (reader helper process as configured) with one
    member per transaction against the batches, alternated: wall and this process's CPU."""
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.us_gaap import ingest

    batch = ingest.RESULT_BATCH_TICKERS
    for _ in range(rounds):
        for label, size in (("one member per transaction", 1), (f"batches of {batch}", batch)):
            ingest.RESULT_BATCH_TICKERS = size
            folder = Path(tempfile.mkdtemp(dir=work))
            db = DbUsGaap(f"sqlite:///{folder / 'facts.sqlite'}")
            started_cpu, started = time.process_time(), time.perf_counter()
            report = ingest.load_companyfacts(archive, db)
            cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
            print(
                f"  ingest, {label}: {report.facts_written:,} facts, {wall:.2f} s wall, "
                f"{cpu:.2f} cpu-s in the ingesting process",
                flush=True,
            )
            db.close()
            shutil.rmtree(folder)
    ingest.RESULT_BATCH_TICKERS = batch


def bench_pairs(db_path: Path, rounds: int, work: Path) -> None:
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap import pairs_step
    from narrative_pipeline.us_gaap.generations import StoreState

    db = DbUsGaap(f"sqlite:///{db_path}")
    for _ in range(rounds):
        folder = Path(tempfile.mkdtemp(dir=work))
        data_store = DataStore(str(folder / "store.bin"))
        started_cpu, started = time.process_time(), time.perf_counter()
        report = pairs_step.build_concept_unit_pairs(StoreState(data_store, 32), db)
        cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
        print(
            f"  step 2: {report.n_cells:,} facts, {cpu:.2f} cpu-s ({wall:.2f} s wall) = "
            f"{report.n_cells / cpu:,.0f} facts/cpu-s",
            flush=True,
        )
        data_store.close()
        shutil.rmtree(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, help="a companyfacts zip (bench_whole_sec.py's)")
    parser.add_argument(
        "--ingest", action="store_true", help="also time whole ingestions of --zip (see above)"
    )
    parser.add_argument("--pairs-db", type=Path, help="a SQLite database to run step 2 over")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.zip:
        bench_writes(args.zip, args.rounds, args.workdir)
    if args.zip and args.ingest:
        bench_ingest(args.zip, args.rounds, args.workdir)
    if args.pairs_db:
        bench_pairs(args.pairs_db, args.rounds, args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
