"""Reader throughput (cells/s) and DbUsGaap write/read rows/s on SQLite and MariaDB.

    .venv/bin/python benchmarks/bench_db.py [--copies 50] [--rows 1000000] [--mysql URL]

- reader: the real sec-fetcher CSVs copied `--copies` times under new tickers, read one by one.
- db write (real): replace_ticker of those results (small files: per-ticker overhead included).
- db write (bulk): replace_ticker of synthetic tickers of 50k facts each, `--rows` in total.
- db read: facts_frame() of everything.
MariaDB runs when --mysql or NARRATIVE_TEST_MYSQL_URL is set (a temporary database is created
and dropped).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.readers import ReadResult, iter_csv_files, read_sec_fetcher_csv


class Timer:
    """Wall and process-CPU seconds: on a shared 2-core machine the CPU figure shows the cost
    of our own work (for MariaDB the server's CPU is not in it)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def rate(self, n: int, unit: str) -> str:
        return f"{n / self.wall:,.0f} {unit}/s wall, {n / max(self.cpu, 1e-9):,.0f} {unit}/s per CPU-second"


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sec-fetcher-csvs"
FACTS_PER_TICKER = 50_000


def make_corpus(folder: Path, copies: int) -> list[Path]:
    sources = iter_csv_files(SHARED)
    for i in range(copies):
        for src in sources:
            shutil.copy(src, folder / f"{src.stem}{i:05d}.csv")
    return iter_csv_files(folder)


def bench_reader(paths: list[Path]) -> list[ReadResult]:
    with Timer() as t:
        results = [read_sec_fetcher_csv(p, None) for p in paths]
    cells = sum(len(r.facts) for r in results)
    print(f"reader: {len(paths)} files, {cells:,} facts: {t.rate(cells, 'facts')}")
    return results


def bench_reader_threads(paths: list[Path], workers: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Timer() as t, ThreadPoolExecutor(workers) as pool:
        cells = sum(len(r.facts) for r in pool.map(read_sec_fetcher_csv, paths))
    print(f"reader, {workers} threads: {t.rate(cells, 'facts')}")


def bench_companyfacts() -> None:
    from narrative_pipeline.readers import read_companyfacts

    paths = sorted((SHARED.parent / "companyfacts").glob("*.json.gz"))
    with Timer() as t:
        facts = sum(len(r.facts) for p in paths for r in read_companyfacts(p))
    print(
        f"companyfacts reader: {len(paths)} files, {facts:,} facts kept: {t.rate(facts, 'facts')}"
    )


def synthetic(ticker: str, rng: np.random.Generator) -> ReadResult:
    n_filings, n_pairs = 50, FACTS_PER_TICKER // 50
    accn = np.repeat([f"{ticker}-{i:04d}" for i in range(n_filings)], n_pairs)
    concept = np.tile([f"Concept{j:04d}" for j in range(n_pairs)], n_filings)
    facts = pd.DataFrame(
        {
            "accn": pd.Categorical(accn),
            "concept": pd.Categorical(concept),
            "unit": pd.Categorical(["USD"] * len(accn)),
            "value": rng.normal(size=len(accn)) * 1e9,
        }
    )
    filings = pd.DataFrame({"accn": sorted(set(accn))})
    return ReadResult(source=ticker, ticker=ticker, filings=filings, facts=facts)


def bench_db(label: str, url: str, results: list[ReadResult], rows: int) -> None:
    db = DbUsGaap(url)
    with Timer() as t:
        written = sum(db.replace_ticker(r) for r in results)
    print(
        f"{label} write (real small files, {len(results)} tickers, "
        f"{t.wall / len(results) * 1e3:.2f} ms/ticker): {t.rate(written, 'rows')}"
    )
    rng = np.random.default_rng(0)
    big = [synthetic(f"SYN{i:04d}", rng) for i in range(max(1, rows // FACTS_PER_TICKER))]
    with Timer() as t:
        written = sum(db.replace_ticker(r) for r in big)
    print(f"{label} write (bulk, {written:,} rows, 50k/ticker): {t.rate(written, 'rows')}")
    with Timer() as t:
        again = db.replace_ticker(big[0])
    print(f"{label} replace of one existing 50k ticker: {t.wall:.3f} s ({again:,} rows)")
    with Timer() as t:
        frame = db.facts_frame()
    print(f"{label} read facts_frame() ({len(frame):,} rows): {t.rate(len(frame), 'rows')}")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mysql", default=os.environ.get("NARRATIVE_TEST_MYSQL_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "csv").mkdir()
        paths = make_corpus(tmp_path / "csv", args.copies)
        results = bench_reader(paths)
        bench_reader_threads(paths, 2)
        bench_companyfacts()
        bench_db("sqlite", f"sqlite:///{tmp_path / 'bench.sqlite'}", results, args.rows)
        size = (tmp_path / "bench.sqlite").stat().st_size
        print(f"sqlite file: {size / 1e6:.1f} MB")
    if args.mysql:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        server = make_url(args.mysql)
        name = f"np_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(server.set(database=""))
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
        try:
            url = server.set(database=name).render_as_string(hide_password=False)
            bench_db("mariadb", url, results, args.rows)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE `{name}`"))


if __name__ == "__main__":
    main()
