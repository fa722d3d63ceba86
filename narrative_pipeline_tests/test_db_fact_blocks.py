"""fact_block (SQLite): the build reads each filing's facts as one blob pair, so the blocks must
never disagree with the fact rows, whoever changes them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.db.models import FACT_BLOCK_TRIGGERS
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.us_gaap import ingest


@pytest.fixture
def db(tmp_path: Path) -> DbUsGaap:
    generate_sample_csvs(tmp_path / "csvs", filings_per_ticker=3)
    database = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ingest.load_csv_files(tmp_path / "csvs", database, workers=1)
    return database


def _built(db: DbUsGaap) -> list[list]:
    """The facts as the store build reads them (blocks where present)."""
    return [row for codes in db.iter_fact_codes(100) for row in codes.frame().values.tolist()]


def _truth(db: DbUsGaap) -> list[list]:
    """The facts from the rows (facts_frame never reads blocks)."""
    return db.facts_frame().values.tolist()


def _raw(db: DbUsGaap) -> sqlite3.Connection:
    """Another program's connection to the same file (plain sqlite3, no DbUsGaap)."""
    return sqlite3.connect(db.engine.url.database, isolation_level=None)


def _blocks(db: DbUsGaap) -> int:
    return int(db._query("SELECT COUNT(*) FROM fact_block")[0][0])


def test_every_written_filing_has_a_block_equal_to_its_rows(db: DbUsGaap) -> None:
    assert _blocks(db) == db.filing_count() > 3
    assert db._filings_without_blocks() == 0
    assert _built(db) == _truth(db) and len(_truth(db)) > 50


def test_guard_triggers_are_in_place_after_our_writes(db: DbUsGaap) -> None:
    names = {r[0] for r in db._query("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert names == set(FACT_BLOCK_TRIGGERS)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE fact SET value = value + 1 WHERE filing_id = {fid}",
        "DELETE FROM fact WHERE filing_id = {fid} AND concept_unit_id = {cid}",
        "INSERT INTO fact VALUES ({fid}, {new_cid}, 12345.5)",
        "REPLACE INTO fact VALUES ({fid}, {cid}, -7.25)",
        "INSERT INTO fact VALUES ({fid}, {cid}, 1.0) ON CONFLICT DO UPDATE SET value = 99.5",
    ],
)
def test_a_change_by_another_program_drops_that_filings_block(db: DbUsGaap, change: str) -> None:
    fid, cid = db._query("SELECT filing_id, concept_unit_id FROM fact LIMIT 1")[0]
    with _raw(db) as con:
        new_cid = con.execute("SELECT MAX(id) + 1 FROM concept_unit").fetchone()[0]
        con.execute(
            "INSERT INTO concept_unit (id, concept, unit) VALUES (?, 'New', 'USD')", (new_cid,)
        )
        before = _blocks(db)
        con.execute(change.format(fid=fid, cid=cid, new_cid=new_cid))
    assert _blocks(db) == before - 1
    assert db._filings_without_blocks() == 1
    assert _built(db) == _truth(db)  # that filing read from its rows


def test_a_replaced_ticker_leaves_no_stale_or_orphan_blocks(db: DbUsGaap, tmp_path: Path) -> None:
    ticker = db.tickers()[0]
    path = next((tmp_path / "csvs").rglob(f"{ticker}.csv"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n")  # the ticker now has one filing
    held_back = ingest.load_csv_files(tmp_path / "csvs", db, workers=1)
    assert held_back.files_loaded == 0 and len(held_back.skipped_files) == 1  # a shrink
    report = ingest.load_csv_files(tmp_path / "csvs", db, workers=1, allow_shrink=True)
    assert report.files_loaded == 1
    orphans = "SELECT COUNT(*) FROM fact_block WHERE filing_id NOT IN (SELECT id FROM filing)"
    assert db._query(orphans)[0][0] == 0
    assert _blocks(db) == db.filing_count()
    assert _built(db) == _truth(db)
    db.delete_ticker(ticker)
    assert db._query(orphans)[0][0] == 0 and _built(db) == _truth(db)


def test_a_database_without_blocks_is_read_from_its_rows(db: DbUsGaap) -> None:
    with _raw(db) as con:
        con.execute("DELETE FROM fact_block")  # as written by an older version
    assert db._filings_without_blocks() == db.filing_count()
    assert _built(db) == _truth(db)


def test_a_damaged_block_is_read_from_its_rows(db: DbUsGaap) -> None:
    with _raw(db) as con:
        con.execute(
            "UPDATE fact_block SET n = n + 1 WHERE filing_id = (SELECT MIN(id) FROM filing)"
        )
    assert _built(db) == _truth(db)


def test_a_failed_write_keeps_the_triggers_and_blocks(db: DbUsGaap) -> None:
    blocks = _blocks(db)
    with pytest.raises(RuntimeError), db._transaction(writes_facts=True) as cur:
        assert not cur.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        cur.execute("DELETE FROM fact_block")
        raise RuntimeError("failure inside the transaction")
    names = {r[0] for r in db._query("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert names == set(FACT_BLOCK_TRIGGERS) and _blocks(db) == blocks


def test_transactions_that_do_not_write_facts_keep_the_guards(db: DbUsGaap) -> None:
    with db._transaction() as cur:
        cur.execute("DELETE FROM fact WHERE filing_id = (SELECT MIN(id) FROM filing)")
    assert db._filings_without_blocks() == 1 and _built(db) == _truth(db)
