"""Reading cost of sec-fetcher's two CSV layouts (issue 13), batched and per file.

The same generated companies (narrative_pipeline.sample_data, every concept column) are written
once per layout, copied under new tickers to `--files` files, and read with
`read_sec_fetcher_csvs` in CSV_BATCH_FILES batches (what ingestion does) and with
`read_sec_fetcher_csv` one file at a time; best of `--repeat` runs, facts/s. The current layout
checks its metadata per file (sec_fetcher_layout.py), which should cost little next to the cells.

Run: `.venv/bin/python benchmarks/bench_csv_layouts.py [--files 640] [--periods 40] [--repeat 5]`.
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

from narrative_pipeline.readers import read_sec_fetcher_csv  # noqa: E402
from narrative_pipeline.readers.sec_fetcher_batch import read_sec_fetcher_csvs  # noqa: E402
from narrative_pipeline.sample_data import generate_sample_csvs  # noqa: E402
from narrative_pipeline.us_gaap.ingest import CSV_BATCH_FILES  # noqa: E402


def corpus(root: Path, layout: str, files: int, periods: int) -> list[Path]:
    """`files` CSVs in `layout`: the six sample companies copied under new tickers."""
    sources = generate_sample_csvs(root / "src", filings_per_ticker=periods, layout=layout)
    paths = []
    for i in range(files):
        target = root / f"T{i:05d}.csv"
        shutil.copyfile(sources[i % len(sources)], target)
        paths.append(target)
    return paths


def best_seconds(read, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - started)
    return best


def measure(paths: list[Path], repeat: int) -> dict[str, float]:
    batches = [paths[i : i + CSV_BATCH_FILES] for i in range(0, len(paths), CSV_BATCH_FILES)]
    facts = sum(read_sec_fetcher_csvs(b, None).columns.fact_count for b in batches)
    batched = best_seconds(lambda: [read_sec_fetcher_csvs(b, None) for b in batches], repeat)
    per_file = best_seconds(lambda: [read_sec_fetcher_csv(p, None) for p in paths], repeat)
    return {"facts": facts, "batched_facts_per_s": facts / batched, "per_file": facts / per_file}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=640)
    parser.add_argument("--periods", type=int, default=40, help="rows per file")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_layouts_") as tmp:
        for layout in ("older", "current"):
            paths = corpus(Path(tmp) / layout, layout, args.files, args.periods)
            row = measure(paths, args.repeat)
            print(
                f"{layout:>7}: {row['facts']:,} facts in {args.files} files; batched "
                f"{row['batched_facts_per_s'] / 1e3:,.0f}k facts/s, per file "
                f"{row['per_file'] / 1e3:,.0f}k facts/s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
