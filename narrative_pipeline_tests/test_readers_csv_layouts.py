"""Both sec-fetcher CSV layouts: detection from the header, the current layout's metadata
(checked, kept in `filing`, exposed by facts_frame), and odd files. Files are generated here
(no ../shared data needed); the current layout follows ../shared/reference/
sec-fetcher-csv-layouts.md."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Column, MetaData, Table, UniqueConstraint, create_engine, text

from narrative_pipeline.db import DbUsGaap, models
from narrative_pipeline.readers import read_sec_fetcher_csv
from narrative_pipeline.readers.sec_fetcher_batch import read_sec_fetcher_csvs
from narrative_pipeline_tests.test_db_backends import db_url  # noqa: F401 - fixture
from narrative_pipeline_tests.test_readers_csv import as_dict
from narrative_pipeline_tests.test_readers_csv_batch import assert_same, record_per_file_reads

CURRENT = [
    "canonical_order",
    "fy",
    "fp",
    "period_end",
    "filed",
    "form",
    "is_amendment",
    "accn",
    "filing_url",
]
NEW_COLUMNS = ("period_end", "is_amendment", "filing_url")
CONCEPTS = ["Assets", "EarningsPerShareDiluted", "EntityPublicFloat"]


def url(accn: str) -> str:
    return f"https://www.sec.gov/Archives/edgar/data/1/{accn.replace('-', '')}/{accn}-index.htm"


def period_rows() -> list[dict[str, str]]:
    """Four periods, newest first; the Q3 row's latest filing is an amendment."""
    periods = [
        ("2024", "FY", "2024-12-31", "2025-02-01", "10-K", "false", "0000000001-25-000004"),
        ("2024", "Q3", "2024-09-30", "2025-01-15", "10-Q", "true", "0000000001-25-000002"),
        ("2024", "Q2", "2024-06-30", "2024-07-30", "10-Q", "false", "0000000001-24-000002"),
        ("2024", "Q1", "2024-03-31", "2024-04-30", "10-Q", "false", "0000000001-24-000001"),
    ]
    rows = []
    for i, (fy, fp, end, filed, form, amendment, accn) in enumerate(periods):
        rows.append(
            {
                "canonical_order": str(i),
                "fy": fy,
                "fp": fp,
                "period_end": end,
                "filed": filed,
                "form": form,
                "is_amendment": amendment,
                "accn": accn,
                "filing_url": url(accn),
                "Assets": f"{1000 - i}::USD",
                "EarningsPerShareDiluted": f"0.{i + 1}::USD/shares" if i != 2 else "",
                "EntityPublicFloat": "24300000000::USD" if i == 0 else "",
            }
        )
    return rows


def csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=columns, restval="", lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write(folder: Path, name: str, rows: list[dict[str, str]], columns: list[str]) -> Path:
    path = folder / name
    path.write_text(csv_text(rows, columns))
    return path


def filing_records(result) -> list[tuple]:
    frame = result.filings
    return [
        tuple(None if pd.isna(v) else v for v in row)
        for row in frame[["accn", "fy", "fp", "period_end", "is_amendment", "filing_url"]]
        .astype(object)
        .values
    ]


def test_current_layout_metadata_kept_and_never_a_concept(tmp_path: Path) -> None:
    path = write(tmp_path, "ACME.csv", period_rows(), CURRENT + CONCEPTS)
    result = read_sec_fetcher_csv(path, None)
    assert result.error is None
    assert set(result.facts["concept"].astype(str)) == set(CONCEPTS)
    assert result.messages == [
        "no taxonomy: all 3 concept columns taken, balance and period types unknown"
    ]
    assert filing_records(result) == [
        ("0000000001-25-000004", 2024, "FY", "2024-12-31", False, url("0000000001-25-000004")),
        ("0000000001-25-000002", 2024, "Q3", "2024-09-30", True, url("0000000001-25-000002")),
        ("0000000001-24-000002", 2024, "Q2", "2024-06-30", False, url("0000000001-24-000002")),
        ("0000000001-24-000001", 2024, "Q1", "2024-03-31", False, url("0000000001-24-000001")),
    ]
    assert result.filings["form"].tolist() == ["10-K", "10-Q", "10-Q", "10-Q"]
    facts = as_dict(result)
    assert len(facts) == 4 + 3 + 1
    assert facts[("0000000001-25-000002", "Assets", "USD")] == 999.0
    assert facts[("0000000001-25-000004", "EntityPublicFloat", "USD")] == 24300000000.0
    # With a taxonomy, metadata columns are not reported as skipped concept columns either.
    taxed = read_sec_fetcher_csv(path, {"Assets"})
    assert taxed.skipped_columns == ["EarningsPerShareDiluted", "EntityPublicFloat"]


def test_metadata_columns_found_by_name_in_any_order(tmp_path: Path) -> None:
    rows = period_rows()
    canonical = read_sec_fetcher_csv(write(tmp_path, "A.csv", rows, CURRENT + CONCEPTS), None)
    shuffled = CURRENT[:]
    random.Random(3).shuffle(shuffled)
    mixed = [CONCEPTS[0], *shuffled[:4], *CONCEPTS[1:], *shuffled[4:]]
    other = read_sec_fetcher_csv(write(tmp_path, "B.csv", rows, mixed), None)
    assert other.error is None
    assert as_dict(other) == as_dict(canonical)
    assert filing_records(other) == filing_records(canonical)
    assert other.filings["form"].tolist() == canonical.filings["form"].tolist()


def test_odd_metadata_reported_with_lines_and_stored_as_null(tmp_path: Path) -> None:
    rows = period_rows()
    rows[1]["period_end"] = ""  # missing
    rows[2]["period_end"] = "2024-13-45"  # not a date
    rows[3]["is_amendment"] = "maybe"
    rows[0]["is_amendment"] = "TRUE"  # any case is fine
    rows[2]["filing_url"] = "https://x/" + "a" * 1200
    rows[2]["canonical_order"], rows[3]["canonical_order"] = "3", "2"  # rows swapped
    rows[0]["canonical_order"] = "first"
    result = read_sec_fetcher_csv(write(tmp_path, "ODD.csv", rows, CURRENT + CONCEPTS), None)
    assert result.error is None
    records = filing_records(result)
    assert [r[3] for r in records] == ["2024-12-31", None, None, "2024-03-31"]
    assert [r[4] for r in records] == [True, True, False, None]
    assert records[2][5] is None and records[3][5] == url("0000000001-24-000001")
    text = "\n".join(result.messages)
    assert "1 rows without a period_end (line 3)" in text
    assert "1 period_end values not a YYYY-MM-DD date stored as NULL (line 4: '2024-13-45')" in text
    assert "is_amendment values other than true/false stored as NULL (line 5: 'maybe')" in text
    assert "filing_url values longer than 1000 characters stored as NULL (line 4)" in text
    assert "canonical_order that is not an integer (line 2: 'first')" in text
    assert (
        "canonical_order disagrees with the row position on 2 of 4 rows "
        "(line 4: 3 at position 2, line 5: 2 at position 3)" in text
    )
    assert len(as_dict(result)) == 8  # every value still loads


def test_canonical_order_counts_rows_skipped_for_their_field_count(tmp_path: Path) -> None:
    lines = csv_text(period_rows(), CURRENT + CONCEPTS).split("\n")
    lines.insert(1, "1,2,3")  # a ragged first data row: skipped, yet it held position 0
    result = read_sec_fetcher_csv(write_text(tmp_path, "RAG.csv", "\n".join(lines)), None)
    assert any("field count" in m and "line 2" in m for m in result.messages)
    assert any(
        "canonical_order disagrees with the row position on 4 of 4 rows (line 3: 0 at position 1"
        in m
        for m in result.messages
    )


def write_text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_missing_metadata_columns_are_null_with_a_message(tmp_path: Path) -> None:
    columns = [c for c in CURRENT if c not in ("canonical_order", "is_amendment")] + CONCEPTS
    result = read_sec_fetcher_csv(write(tmp_path, "MISS.csv", period_rows(), columns), None)
    assert result.error is None
    assert "no 'canonical_order' column: the row order is not checked" in result.messages
    assert "no 'is_amendment' column: loaded with is_amendment empty (NULL)" in result.messages
    assert result.filings["is_amendment"].isna().all()
    assert result.filings["period_end"].tolist()[0] == "2024-12-31"


def test_an_accn_latest_for_several_periods_keeps_their_values_apart(tmp_path: Path) -> None:
    rows = period_rows()
    rows[2]["accn"] = rows[1]["accn"]  # one filing is the latest of Q3 and Q2
    result = read_sec_fetcher_csv(write(tmp_path, "SHARE.csv", rows, CURRENT + CONCEPTS), None)
    keys = result.filings["accn"].tolist()
    shared = "0000000001-25-000002"
    assert keys == ["0000000001-25-000004", f"{shared}#2024-Q3", f"{shared}#2024-Q2", keys[3]]
    facts = as_dict(result)
    assert facts[(f"{shared}#2024-Q3", "Assets", "USD")] == 999.0
    assert facts[(f"{shared}#2024-Q2", "Assets", "USD")] == 998.0
    assert result.duplicate_facts == 0
    assert any("keyed as 'accn#fy-fp'" in m for m in result.messages)


def test_repeated_period_is_reported(tmp_path: Path) -> None:
    rows = period_rows()
    rows[3]["fp"] = "Q2"
    result = read_sec_fetcher_csv(write(tmp_path, "REP.csv", rows, CURRENT + CONCEPTS), None)
    assert any("share a (fy, fp) period" in m and "line 4" in m for m in result.messages)
    assert len(result.filings) == 4  # distinct accns: both rows load


def test_rows_sec_fetcher_never_writes_are_reported_and_loaded(tmp_path: Path) -> None:
    rows = period_rows()
    rows[1]["fp"] = ""
    rows[2]["fy"] = "x"
    rows[3]["form"] = "8-K"
    result = read_sec_fetcher_csv(write(tmp_path, "ODDROWS.csv", rows, CURRENT + CONCEPTS), None)
    assert (
        "2 rows without a fy or fp (the current layout has both on every row) (line 3, line 4)"
        in (result.messages)
    )
    assert "1 8-K rows (sec-fetcher drops 8-K observations) (line 5)" in result.messages
    assert len(result.filings) == 4 and len(as_dict(result)) == 8


def test_older_layout_unchanged_and_new_fields_null(tmp_path: Path) -> None:
    older = "Assets,fy,fp,form,filed,accn\n1::USD,2024,FY,10-K,2024-02-01,A1\n"
    result = read_sec_fetcher_csv(write_text(tmp_path, "OLD.csv", older), None)
    assert result.error is None and as_dict(result) == {("A1", "Assets", "USD"): 1.0}
    assert result.filings[["period_end", "is_amendment", "filing_url"]].isna().all().all()
    assert not any("canonical_order" in m or "period_end" in m for m in result.messages)


@pytest.mark.parametrize("taxonomy", [None, {"Assets", "EarningsPerShareDiluted"}])
def test_batch_of_both_layouts_matches_the_per_file_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taxonomy: set[str] | None
) -> None:
    rows = period_rows()
    odd = [dict(r) for r in rows]
    odd[1]["is_amendment"] = "nope"
    odd[2]["accn"] = odd[1]["accn"]
    swapped = [dict(r) for r in rows]
    swapped[0]["canonical_order"], swapped[1]["canonical_order"] = "1", "0"
    no_end = [dict(r) for r in rows]
    no_end[3]["period_end"] = ""
    paths = [
        write(tmp_path, "CUR.csv", rows, CURRENT + CONCEPTS),
        write_text(tmp_path, "OLD.csv", "Assets,fy,fp,form,filed,accn\n1::USD,2024,FY,K,x,A1\n"),
        write(tmp_path, "ODD.csv", odd, CONCEPTS + CURRENT),
        write(tmp_path, "MIXED.csv", rows, [CONCEPTS[0], *CURRENT[::-1], *CONCEPTS[1:]]),
        write(tmp_path, "SWAP.csv", swapped, CURRENT + CONCEPTS),
        write(tmp_path, "NOEND.csv", no_end, CURRENT + CONCEPTS),
        write(tmp_path, "NOURL.csv", rows, CURRENT[:-1] + CONCEPTS),
    ]
    reread = record_per_file_reads(monkeypatch)
    batch = read_sec_fetcher_csvs(paths, taxonomy)
    monkeypatch.undo()
    # Clean files of either layout (metadata in any order) take the fast path; a file with
    # anything to report, or without every metadata column, is read by the per-file reader.
    assert sorted(reread) == ["NOEND.csv", "NOURL.csv", "ODD.csv", "SWAP.csv"]
    for path, got in zip(paths, batch.results(), strict=True):
        assert_same(got, read_sec_fetcher_csv(path, taxonomy))
    assert batch.columns.filings[batch.column_of_file[0]][0] == (
        "0000000001-25-000004",
        "10-K",
        2024,
        "FY",
        "2025-02-01",
        "2024-12-31",
        False,
        url("0000000001-25-000004"),
    )


def test_metadata_stored_in_filing_and_exposed_by_facts_frame(
    db_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    rows = period_rows()
    paths = [
        write(tmp_path, "ACME.csv", rows, CURRENT + CONCEPTS),
        write_text(tmp_path, "OLD.csv", "Assets,fy,fp,form,filed,accn\n1::USD,2024,FY,K,x,A1\n"),
    ]
    db = DbUsGaap(db_url)
    try:
        db.replace_ticker(read_sec_fetcher_csv(paths[0], None))  # the per-file write path
        db.replace_fact_columns(read_sec_fetcher_csvs(paths[1:], None).columns, [None])
        frame = db.facts_frame(filing_columns=("period_end", "is_amendment", "filing_url"))
        assert list(frame.columns) == [
            "ticker",
            "accn",
            "concept",
            "unit",
            "value",
            "period_end",
            "is_amendment",
            "filing_url",
        ]
        acme = frame[frame["ticker"] == "ACME"].set_index(["accn", "concept"])
        row = acme.loc[("0000000001-25-000002", "Assets")]
        assert (row["value"], row["period_end"], bool(row["is_amendment"])) == (
            999.0,
            "2024-09-30",
            True,
        )
        assert row["filing_url"] == url("0000000001-25-000002")
        old = frame[frame["ticker"] == "OLD"]
        assert old[["period_end", "is_amendment", "filing_url"]].isna().all().all()
        assert db.facts_frame().columns.tolist() == ["ticker", "accn", "concept", "unit", "value"]
        filings = db.filings_frame(["ACME"])
        assert filings["is_amendment"].tolist() == [False, False, True, False]  # accn order
        assert (
            str(filings["fy"].dtype) == "Int64" and str(filings["is_amendment"].dtype) == "boolean"
        )
        # The batch write path stores the same metadata as the per-file one.
        db.replace_fact_columns(read_sec_fetcher_csvs(paths[:1], None).columns, [None])
        assert db.filings_frame(["ACME"]).equals(filings)
        with pytest.raises(ValueError, match="unknown filing columns"):
            db.facts_frame(filing_columns=("value; DROP TABLE fact",))
    finally:
        db.close()


def test_an_older_database_gains_the_columns_and_keeps_its_rows(
    db_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A database written before the current layout existed (filing without period_end,
    is_amendment, filing_url) opens, keeps its rows (new fields NULL) and takes new files."""
    engine = create_engine(db_url)
    old = MetaData()
    Table(
        "filing",
        old,
        *(
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in models.filing.columns
            if c.name not in NEW_COLUMNS
        ),
        UniqueConstraint("ticker", "accn", name="uq_filing_ticker_accn"),
    )
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO filing (ticker, accn, form, fy, fp, filed) VALUES "
                "('OLD', 'A1', '10-K', 2023, 'FY', '2024-02-01')"
            )
        )
    engine.dispose()
    db = DbUsGaap(db_url)
    try:
        stored = db.filings_frame()
        assert stored[["ticker", "accn", "fy"]].values.tolist() == [["OLD", "A1", 2023]]
        assert stored[list(NEW_COLUMNS)].isna().all().all()
        path = write(tmp_path, "ACME.csv", period_rows(), CURRENT + CONCEPTS)
        db.replace_ticker(read_sec_fetcher_csv(path, None))
        assert db.filings_frame(["ACME"])["period_end"].notna().all()
    finally:
        db.close()
    DbUsGaap(db_url).close()  # opening again: nothing left to add


def test_filing_columns_flow_through_the_shared_source_write_path(
    db_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two files of one ticker (db/sources.py write_shared): a filing only the second file
    brings is inserted with its current-layout fields, and a rewrite of the first updates the
    fields of the filing it alone holds."""
    rows = period_rows()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a", "ACME.csv", rows[:3], CURRENT + CONCEPTS)
    second = write(tmp_path / "b", "ACME.csv", rows[1:], CURRENT + CONCEPTS)
    db = DbUsGaap(db_url)
    try:
        db.replace_ticker(read_sec_fetcher_csv(first, None))
        db.replace_ticker(read_sec_fetcher_csv(second, None))  # shares rows 1-2, adds row 3
        filings = db.filings_frame(["ACME"]).set_index("accn")
        q1 = filings.loc["0000000001-24-000001"]
        assert (q1["period_end"], bool(q1["is_amendment"]), q1["filing_url"]) == (
            "2024-03-31",
            False,
            url("0000000001-24-000001"),
        )
        changed = [dict(row) for row in rows[:3]]
        changed[0]["is_amendment"] = "true"
        changed[0]["period_end"] = "2024-12-30"
        changed[0]["filing_url"] = url("0000000001-25-000004") + "?v=2"
        write(tmp_path / "a", "ACME.csv", changed, CURRENT + CONCEPTS)
        db.replace_ticker(read_sec_fetcher_csv(first, None))  # the FY filing is A's alone
        fy = db.filings_frame(["ACME"]).set_index("accn").loc["0000000001-25-000004"]
        assert (fy["period_end"], bool(fy["is_amendment"]), fy["filing_url"]) == (
            "2024-12-30",
            True,
            url("0000000001-25-000004") + "?v=2",
        )
        assert len(db.filings_frame(["ACME"])) == 4  # nothing lost
    finally:
        db.close()
