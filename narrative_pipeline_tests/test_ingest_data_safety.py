"""Ingestion never loses stored data (issue 12): every bad-file case of the attack, on a real
SQLite DbUsGaap (and MariaDB, through test_db_backends' db_url fixture), checks that the stored
facts and filings stay exactly as they were and that the file is reported as failed.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.us_gaap import ingest
from narrative_pipeline_tests.test_db_backends import db_url  # noqa: F401 - fixture

HEADER = "Assets,Liabilities,fy,fp,form,filed,accn\n"


@pytest.fixture
def db(db_url: str) -> Iterator[DbUsGaap]:  # noqa: F811 - db_url is the imported fixture
    database = DbUsGaap(db_url)
    yield database
    database.close()


def snapshot(db: DbUsGaap) -> tuple[list, list]:
    """Every stored fact and filing row (what must stay byte for byte)."""
    facts = db.facts_frame().values.tolist()
    filings = db._query(
        "SELECT ticker, accn, form, fy, fp, filed FROM filing ORDER BY ticker, accn"
    )
    return facts, sorted(map(tuple, filings))


def keys(db: DbUsGaap, ticker: str) -> dict[tuple[str, str, str], float]:
    frame = db.facts_frame(tickers=[ticker])
    return {(a, c, u): v for _, a, c, u, v in frame.itertuples(index=False)}


def failed_reasons(report) -> dict[str, str]:
    return {Path(f.path).name: f.reason for f in report.skipped_files}


@pytest.fixture
def aapl(tmp_path: Path, shared_data: Path) -> Path:
    folder = tmp_path / "csv"
    folder.mkdir()
    shutil.copy(shared_data / "sec-fetcher-csvs" / "AAPL.csv", folder / "AAPL.csv")
    return folder / "AAPL.csv"


def _every_row_wrong_count(text: str) -> str:
    head, *rows = text.splitlines()
    return head + "\n" + "".join(row + ",extra\n" for row in rows)


def _every_accn_empty(text: str) -> str:
    head, *rows = text.splitlines()
    col = head.split(",").index("accn")
    out = [head]
    for row in rows:
        cells = row.split(",")
        cells[col] = ""
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


def _unbalanced_quote(text: str) -> str:
    head, first, *rows = text.splitlines()
    return "\n".join([head, '"' + first, *rows]) + "\n"


def _cut_at(fraction: float):
    return lambda text: text[: int(len(text) * fraction)]


def _cut_at_a_line(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[: len(lines) // 2])


BAD_FILES = {
    "every row with a wrong field count": (_every_row_wrong_count, "no usable filing"),
    "every accn empty": (_every_accn_empty, "no usable filing"),
    "an unbalanced quote": (_unbalanced_quote, "unbalanced double quote"),
    "cut at 90% of its bytes": (_cut_at(0.9), "torn line"),
    "cut at a line boundary": (_cut_at_a_line, "would drop 6 of the 10 filings"),
    "header only": (lambda text: text.splitlines()[0] + "\n", "no usable filing (header only)"),
    "empty": (lambda text: "", "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_csv_keeps_the_stored_data(db: DbUsGaap, aapl: Path, case: str) -> None:
    first = ingest.load_csv_files(aapl.parent, db, workers=1)
    assert first.files_loaded == 1 and db.fact_count() > 1000
    before = snapshot(db)
    damage, reason = BAD_FILES[case]
    aapl.write_text(damage(aapl.read_text()))
    report = ingest.load_csv_files(aapl.parent, db, workers=1)
    assert report.files_loaded == 0
    assert reason in failed_reasons(report)["AAPL.csv"]
    assert snapshot(db) == before  # 0 stored facts lost
    again = ingest.load_csv_files(aapl.parent, db, workers=1)  # still failed, never "unchanged"
    assert again.files_unchanged == 0 and "AAPL.csv" in failed_reasons(again)


def test_allow_shrink_replaces_deliberately(db: DbUsGaap, aapl: Path) -> None:
    ingest.load_csv_files(aapl.parent, db, workers=1)
    aapl.write_text(_cut_at_a_line(aapl.read_text()))
    assert ingest.load_csv_files(aapl.parent, db, workers=1).files_loaded == 0
    report = ingest.load_csv_files(aapl.parent, db, workers=1, allow_shrink=True)
    assert report.files_loaded == 1 and not report.skipped_files
    assert db.filing_count() == 4


def test_an_empty_companyfacts_document_keeps_the_stored_data(
    db: DbUsGaap, tmp_path: Path, shared_data: Path
) -> None:
    path = tmp_path / "AAPL.json"
    with gzip.open(shared_data / "companyfacts" / "AAPL_companyfacts.json.gz", "rb") as fh:
        path.write_bytes(fh.read())
    assert ingest.load_companyfacts(path, db, workers=1).files_loaded == 1
    before = snapshot(db)
    path.write_text(json.dumps({"facts": {}}))
    report = ingest.load_companyfacts(path, db, workers=1)
    assert report.files_loaded == 0 and "no usable filing" in failed_reasons(report)["AAPL.json"]
    assert snapshot(db) == before


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A sec-fetcher CSV with rows of (accn, Assets cell)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{assets},2::USD,2024,FY,10-K,2024-01-01,{accn}\n" for accn, assets in rows)
    path.write_text(HEADER + body)
    return path


def test_two_folders_of_one_ticker_hold_the_union(db: DbUsGaap, tmp_path: Path) -> None:
    root = tmp_path / "csv"
    a = _csv(root / "NVDA.csv", [("A1", "1::USD"), ("S1", "5::USD")])
    b = _csv(root / "real" / "NVDA.csv", [("B1", "3::USD"), ("S1", "6::USD")])
    report = ingest.load_csv_files(root, db, workers=1)
    assert report.files_loaded == 2 and not report.skipped_files
    assert {k[0] for k in keys(db, "NVDA")} == {"A1", "B1", "S1"}
    assert report.conflicting_facts == 1  # S1 Assets: 5 in one file, 6 in the other
    assert any("also held by another source" in m for m in report.messages)
    # Changing one source (it grows) never drops the other's filings.
    _csv(b, [("B1", "3::USD"), ("S1", "6::USD"), ("B2", "4::USD")])
    assert ingest.load_csv_files(root, db, workers=1).files_loaded == 1
    assert {k[0] for k in keys(db, "NVDA")} == {"A1", "B1", "B2", "S1"}
    # Shrinking one source deliberately drops only what that source alone held.
    _csv(b, [("B2", "4::USD")])
    report = ingest.load_csv_files(root, db, workers=1, allow_shrink=True)
    assert report.files_loaded == 1
    assert {k[0] for k in keys(db, "NVDA")} == {"A1", "B2", "S1"}  # S1 is still a's
    assert a.exists()


def test_csv_and_companyfacts_of_one_ticker_hold_the_union(
    db: DbUsGaap, tmp_path: Path, shared_data: Path
) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    shutil.copy(shared_data / "sec-fetcher-csvs" / "AAPL.csv", csv_dir / "AAPL.csv")
    cf = shared_data / "companyfacts" / "AAPL_companyfacts.json.gz"
    alone = {}
    for name, load in (
        ("csv", lambda d: ingest.load_csv_files(csv_dir, d, workers=1)),
        ("cf", lambda d: ingest.load_companyfacts(cf, d, workers=1)),
    ):
        single = DbUsGaap(f"sqlite:///{tmp_path / (name + '.sqlite')}")
        load(single)
        alone[name] = keys(single, "AAPL")
        single.close()
    ingest.load_csv_files(csv_dir, db, workers=1)
    report = ingest.load_companyfacts(cf, db, workers=1)
    union = keys(db, "AAPL")
    assert set(union) == set(alone["csv"]) | set(alone["cf"])
    both = set(alone["csv"]) & set(alone["cf"])
    assert both  # the two sources share filings
    differ = sum(alone["csv"][k] != alone["cf"][k] for k in both)
    assert report.conflicting_facts == differ
    assert all(union[k] == alone["cf"][k] for k in alone["cf"])  # the later source's value
    # Loading the CSV again (changed by a touch of content) keeps the companyfacts filings.
    (csv_dir / "AAPL.csv").write_text((csv_dir / "AAPL.csv").read_text() + "\n")
    ingest.load_csv_files(csv_dir, db, workers=1)
    assert set(keys(db, "AAPL")) == set(union)


def test_a_deleted_source_keeps_its_filings_until_pruned(db: DbUsGaap, tmp_path: Path) -> None:
    root = tmp_path / "csv"
    a = _csv(root / "NVDA.csv", [("A1", "1::USD"), ("S1", "5::USD")])
    _csv(root / "real" / "NVDA.csv", [("B1", "3::USD"), ("S1", "5::USD")])
    _csv(root / "MSFT.csv", [("M1", "7::USD")])
    ingest.load_csv_files(root, db, workers=1)
    before = snapshot(db)
    a.unlink()
    (root / "MSFT.csv").unlink()
    ingest.load_csv_files(root, db, workers=1)
    assert snapshot(db) == before  # a missing file alone drops nothing
    pruned = db.prune_missing_sources()
    assert pruned == {"sources": 2, "filings_deleted": 2}  # A1 and M1; S1 is still b's
    assert {k[0] for k in keys(db, "NVDA")} == {"B1", "S1"}
    assert db.tickers() == ["NVDA"]
    assert all(Path(p).exists() for p in db.source_file_state())


def test_filings_written_before_source_tracking_are_adopted(db: DbUsGaap, tmp_path: Path) -> None:
    root = tmp_path / "csv"
    _csv(root / "NVDA.csv", [("A1", "1::USD"), ("A2", "2::USD")])
    ingest.load_csv_files(root, db, workers=1)
    with db._transaction() as cur:
        cur.execute("DELETE FROM filing_source")  # as an older version left the database
    reopened = DbUsGaap(db.url)
    try:
        assert len(reopened._query("SELECT * FROM filing_source")) == 2
        _csv(root / "NVDA.csv", [("A1", "1::USD")])
        report = ingest.load_csv_files(root, reopened, workers=1)
        assert "would drop 1 of the 2 filings" in failed_reasons(report)["NVDA.csv"]
    finally:
        reopened.close()


def test_a_ticker_longer_than_its_column_is_refused(db: DbUsGaap, tmp_path: Path) -> None:
    root = tmp_path / "csv"
    _csv(root / ("T" * 70 + ".csv"), [("A1", "1::USD")])
    _csv(root / "OK.csv", [("A1", "1::USD")])
    report = ingest.load_csv_files(root, db, workers=1)
    reason = failed_reasons(report)["T" * 70 + ".csv"]
    assert "70 characters" in reason and "at most 64" in reason
    assert report.files_loaded == 1 and db.tickers() == ["OK"]
