"""Where a SQLite fact write spends its time, for benchmarks/RESULTS.md (issue 4).

Writes N synthetic facts (180 per filing, primary-key order, batches of N/8 facts, one
transaction each) the way `DbUsGaap` does: multi-row INSERTs of 200 rows through the sqlite3
module, then optionally the filings' `fact_block` rows. Reports, per page size:

- `prep`: building the Python parameter objects (tolist + one flat object array);
- `rows`: `executemany` of the rows;
- `blocks`: packing and inserting the fact_block rows;
- `commit`;
- `c_copy`: the same rows copied by SQLite itself (`INSERT ... SELECT`), i.e. SQLite's own
  insert cost without Python parameter binding.

Run: `.venv/bin/python benchmarks/bench_sqlite_write.py [--facts 1000000] [--repeat 3]`
(best of `repeat` per figure; seconds and microseconds per fact).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from narrative_pipeline.db.fact_reader import pack_blocks  # noqa: E402

ROWS_PER_INSERT = 200
FACTS_PER_FILING = 180
BATCHES = 8
TABLE = (
    "(filing_id INTEGER NOT NULL, concept_unit_id INTEGER NOT NULL, value FLOAT NOT NULL, "
    "PRIMARY KEY (filing_id, concept_unit_id)) WITHOUT ROWID"
)


def synthetic_facts(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fid = np.repeat(np.arange(1, n // FACTS_PER_FILING + 2), FACTS_PER_FILING)[:n]
    cid = np.tile(np.arange(1, FACTS_PER_FILING + 1), n // FACTS_PER_FILING + 1)[:n]
    values = np.random.default_rng(0).standard_normal(n) * 1e6
    return fid.astype(np.int64), cid.astype(np.int64), values


def connect(path: Path, page_size: int) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA cache_size=-65536")
    con.execute(f"CREATE TABLE fact {TABLE}")
    con.execute(f"CREATE TABLE copy {TABLE}")
    con.execute(
        "CREATE TABLE fact_block (filing_id INTEGER PRIMARY KEY, n INTEGER, p BLOB, v BLOB)"
    )
    return con


def batch_bounds(n: int) -> list[tuple[int, int]]:
    """Batches of whole filings."""
    cuts = [b * n // BATCHES // FACTS_PER_FILING * FACTS_PER_FILING for b in range(BATCHES)]
    return list(zip(cuts, cuts[1:] + [n], strict=True))


def write_once(path: Path, page_size: int, facts: tuple, blocks: bool) -> dict[str, float]:
    fid, cid, values = facts
    con = connect(path, page_size)
    cur = con.cursor()
    spent = dict.fromkeys(("prep", "rows", "blocks", "commit"), 0.0)
    statement = "INSERT INTO fact VALUES " + ",".join(["(?,?,?)"] * ROWS_PER_INSERT)
    for start, stop in batch_bounds(len(fid)):
        f, c, v = fid[start:stop], cid[start:stop], values[start:stop]
        cur.execute("BEGIN")
        t0 = time.perf_counter()
        m = len(f) // ROWS_PER_INSERT * ROWS_PER_INSERT
        flat = np.empty(3 * m, dtype=object)
        flat[0::3], flat[1::3], flat[2::3] = f[:m].tolist(), c[:m].tolist(), v[:m].tolist()
        t1 = time.perf_counter()
        width = 3 * ROWS_PER_INSERT
        cur.executemany(statement, (flat[i : i + width] for i in range(0, 3 * m, width)))
        rest = zip(f[m:].tolist(), c[m:].tolist(), v[m:].tolist(), strict=True)
        cur.executemany("INSERT INTO fact VALUES (?,?,?)", rest)
        t2 = time.perf_counter()
        if blocks:
            cur.executemany("INSERT INTO fact_block VALUES (?,?,?,?)", pack_blocks(f, c, v))
        t3 = time.perf_counter()
        cur.execute("COMMIT")
        t4 = time.perf_counter()
        for name, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[name] += seconds
    started = time.perf_counter()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO copy SELECT * FROM fact")
    cur.execute("COMMIT")
    spent["c_copy"] = time.perf_counter() - started
    con.close()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    facts = synthetic_facts(args.facts)
    results = {"facts": args.facts, "sqlite": sqlite3.sqlite_version, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench_sqlite_write_") as tmp:
        path = Path(tmp) / "facts.sqlite"
        for page_size in (4096, 65536):
            for blocks in (False, True):
                runs = [write_once(path, page_size, facts, blocks) for _ in range(args.repeat)]
                best = {k: min(r[k] for r in runs) for k in runs[0]}
                total = best["prep"] + best["rows"] + best["blocks"] + best["commit"]
                row = {
                    "page_size": page_size,
                    "blocks": blocks,
                    "seconds": {k: round(v, 4) for k, v in best.items()},
                    "write_seconds": round(total, 4),
                    "us_per_fact": {
                        k: round(1e6 * v / args.facts, 3)
                        for k, v in {**best, "write": total}.items()
                    },
                }
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
