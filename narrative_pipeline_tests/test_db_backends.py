"""DbUsGaap on SQLite and on the real MariaDB (scripts/services.sh): same tests, both back ends.

On MariaDB each test gets its own uniquely named database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from narrative_pipeline.db import DbUsGaap, resolve_url
from narrative_pipeline.db.taxonomy import load_taxonomy
from narrative_pipeline.readers import ReadResult, iter_csv_files, read_sec_fetcher_csv
from narrative_pipeline.readers.base import concat_fact_columns

SESSION_TAG = f"np_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    server = make_url(request.getfixturevalue("mysql_url"))
    name = f"{SESSION_TAG}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database=""))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[DbUsGaap]:
    database = DbUsGaap(db_url)
    yield database
    database.close()


def write_batch(db: DbUsGaap, results: list[ReadResult], **options) -> list[int | Exception]:
    """Several results through the production write path (one `replace_fact_columns`)."""
    return db.replace_fact_columns(
        concat_fact_columns([r.fact_columns() for r in results]), **options
    )


def result(ticker: str, rows: list[tuple[str, str, str, float]], forms=None) -> ReadResult:
    """A ReadResult from (accn, concept, unit, value) rows."""
    facts = pd.DataFrame(rows, columns=["accn", "concept", "unit", "value"])
    facts["value"] = facts["value"].astype("float64")
    accns = sorted(set(facts["accn"]))
    filings = pd.DataFrame(
        {
            "accn": accns,
            "form": [(forms or {}).get(a, "10-K") for a in accns],
            "fy": pd.array([2024] * len(accns), dtype="Int64"),
            "fp": ["FY"] * len(accns),
            "filed": ["2025-01-31"] * len(accns),
        }
    )
    return ReadResult(source=f"{ticker}.csv", ticker=ticker, filings=filings, facts=facts)


def test_replace_ticker_is_idempotent_and_round_trips(db: DbUsGaap) -> None:
    r = result("AAA", [("A1", "Assets", "USD", 1.5), ("A1", "EPS", "USD/SHARES", -0.25)])
    assert db.replace_ticker(r) == 2
    assert db.replace_ticker(r) == 2
    assert db.fact_count() == 2 and db.filing_count() == 1
    frame = db.facts_frame()
    assert frame.values.tolist() == [
        ["AAA", "A1", "Assets", "USD", 1.5],
        ["AAA", "A1", "EPS", "USD/SHARES", -0.25],
    ]


def test_replace_ticker_replaces_only_that_ticker(db: DbUsGaap) -> None:
    db.replace_ticker(result("AAA", [("A1", "Assets", "USD", 1.0), ("A2", "Assets", "USD", 2.0)]))
    db.replace_ticker(result("BBB", [("B1", "Assets", "USD", 3.0)]))
    with pytest.raises(ValueError, match="would drop 2 of the 2 filings"):
        db.replace_ticker(result("AAA", [("A3", "Liabilities", "USD", 4.0)]))  # a shrink
    db.replace_ticker(result("AAA", [("A3", "Liabilities", "USD", 4.0)]), allow_shrink=True)
    assert db.tickers() == ["AAA", "BBB"]
    assert db.facts_frame()[["ticker", "accn", "value"]].values.tolist() == [
        ["AAA", "A3", 4.0],
        ["BBB", "B1", 3.0],
    ]
    assert db.facts_frame(tickers=["BBB"])["accn"].tolist() == ["B1"]
    db.delete_ticker("AAA")
    assert db.tickers() == ["BBB"] and db.fact_count() == 1


def test_failed_replace_keeps_old_data(db: DbUsGaap, monkeypatch: pytest.MonkeyPatch) -> None:
    db.replace_ticker(result("AAA", [("A1", "Assets", "USD", 1.0)]))

    def boom(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(
        db._writer, "_ensure_pairs", boom
    )  # fails after the delete, mid-transaction
    with pytest.raises(RuntimeError):
        db.replace_ticker(result("AAA", [("A9", "Other", "USD", 9.0)]), allow_shrink=True)
    monkeypatch.undo()
    assert db.facts_frame()[["accn", "concept", "value"]].values.tolist() == [["A1", "Assets", 1.0]]
    # the pair cache was dropped with the transaction: new pairs still get valid ids
    db.replace_ticker(result("AAA", [("A9", "Other", "USD", 9.0)]), allow_shrink=True)
    assert db.facts_frame()["concept"].tolist() == ["Other"]


def test_error_results_are_refused(db: DbUsGaap) -> None:
    db.replace_ticker(result("AAA", [("A1", "Assets", "USD", 1.0)]))
    bad = ReadResult(source="AAA.csv", ticker="AAA", error="empty file")
    with pytest.raises(ValueError, match="unusable"):
        db.replace_ticker(bad)
    assert db.fact_count() == 1


def test_concepts_and_units_are_case_sensitive(db: DbUsGaap) -> None:
    db.replace_ticker(result("AAA", [("A1", "Assets", "USD", 1.0), ("A1", "ASSETS", "USD", 2.0)]))
    assert sorted(db.facts_frame()["concept"]) == ["ASSETS", "Assets"]


def test_facts_frame_sorted_and_exact(db: DbUsGaap) -> None:
    rng = np.random.default_rng(0)
    rows = [
        (f"A{a}", f"C{c:03d}", u, float(rng.normal() * 10 ** rng.integers(0, 15)))
        for a in range(5)
        for c in range(240)  # 2400 rows: MariaDB takes the LOAD DATA path
        for u in ("USD", "SHARES")
    ]
    db.replace_ticker(result("ZZZ", rows[::-1]))
    db.replace_ticker(result("AAA", rows[:7]))
    frame = db.facts_frame()
    expected = sorted([("AAA", *r) for r in rows[:7]] + [("ZZZ", *r) for r in rows])
    assert [tuple(r) for r in frame.itertuples(index=False)] == expected  # values bit-exact


def test_source_file_bookkeeping(db: DbUsGaap, tmp_path: Path) -> None:
    path = tmp_path / "AAA.csv"
    path.write_text("Assets,accn\n1::USD,A1\n")
    assert not db.source_file_unchanged(path)
    state = db.record_source_file(path)
    assert state.ticker == "AAA" and state.size == path.stat().st_size
    assert db.source_file_unchanged(path)
    os.utime(path, (1, 1))  # touched, same content
    assert db.source_file_unchanged(path)
    path.write_text("Assets,accn\n2::USD,A1\n")
    assert not db.source_file_unchanged(path)
    assert set(db.source_file_state()) == {str(path.resolve())}
    db.forget_source_file(path)
    assert db.source_file_state() == {}


def test_real_csvs_and_taxonomy(db: DbUsGaap, shared_data: Path) -> None:
    report = load_taxonomy(shared_data / "taxonomy" / "us_gaap_schema_2025.sql.gz", db)
    assert report.concepts == 8469
    concepts = db.taxonomy_concepts()
    assert len(concepts) == 8469 and "Assets" in concepts
    frame = db.taxonomy_frame()
    assets = frame.set_index("name").loc["Assets"]
    assert (assets["balance_type"], assets["period_type"]) == ("debit", "instant")
    assert assets["concept_type"] == "xbrli:monetaryItemType"
    results = [
        read_sec_fetcher_csv(p, concepts) for p in iter_csv_files(shared_data / "sec-fetcher-csvs")
    ]
    written = sum(db.replace_ticker(r) for r in results)
    assert written == sum(len(r.facts) for r in results) == db.fact_count()
    again = sum(db.replace_ticker(r) for r in results)
    assert again == written == db.fact_count()
    assert db.tickers() == ["AAPL", "AMZN", "GOOG", "MSFT"]
    frame = db.facts_frame(tickers=["MSFT"])
    msft = next(r for r in results if r.ticker == "MSFT").facts
    assert len(frame) == len(msft)
    assert np.allclose(
        np.sort(frame["value"].to_numpy()), np.sort(msft["value"].to_numpy()), rtol=0
    )


def test_resolve_url_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("NARRATIVE_DB_URL", "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NARRATIVE_DATA_DIR", str(tmp_path / "d"))
    assert resolve_url() == f"sqlite:///{tmp_path / 'd' / 'narrative.sqlite'}"
    monkeypatch.setenv("MYSQL_HOST", "db.example")
    monkeypatch.setenv("MYSQL_PORT", "3307")
    monkeypatch.setenv("MYSQL_USER", "u")
    monkeypatch.setenv("MYSQL_PASSWORD", "p@ss")
    monkeypatch.setenv("MYSQL_DATABASE", "gaap")
    url = make_url(resolve_url())
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "db.example",
        3307,
        "u",
        "p@ss",
        "gaap",
    )
    assert url.query["charset"] == "utf8mb4"
    monkeypatch.setenv("NARRATIVE_DB_URL", "sqlite:///x.sqlite")
    assert resolve_url() == "sqlite:///x.sqlite"
    assert resolve_url("sqlite:///y.sqlite") == "sqlite:///y.sqlite"
    with pytest.raises(ValueError, match="unsupported"):
        DbUsGaap("postgresql://x/y")


def test_result_without_filings_empties_the_ticker_only_when_allowed(db: DbUsGaap) -> None:
    """A result without filings would drop every stored filing of its source: refused, unless
    `allow_shrink` asks for that replacement deliberately."""
    db.replace_ticker(result("AAA", [("A1", "Assets", "USD", 1.0)]))
    db.replace_ticker(result("BBB", [("B1", "Assets", "USD", 2.0)]))
    with pytest.raises(ValueError, match="would drop 1 of the 1 filings"):
        db.replace_ticker(ReadResult(source="AAA.csv", ticker="AAA"))
    assert db.fact_count() == 2
    assert db.replace_ticker(ReadResult(source="AAA.csv", ticker="AAA"), allow_shrink=True) == 0
    assert db.tickers() == ["BBB"] and db.fact_count() == 1


def test_bulk_path_falls_back_when_local_infile_is_refused(
    db: DbUsGaap, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pymysql

    from narrative_pipeline.db import fact_writer

    def refused(*_args):
        raise pymysql.err.OperationalError(1148, "The used command is not allowed")

    monkeypatch.setattr(fact_writer, "_load_data_local", refused)
    rows = [("A1", f"C{i}", "USD", float(i)) for i in range(3000)]
    assert db.replace_ticker(result("AAA", rows)) == 3000
    assert db.facts_frame()["value"].sum() == sum(range(3000))
    assert db._load_data_ok is not db.is_mysql  # MariaDB switched to INSERTs for good


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("A1", "Assets", "USD", float("nan"))], "non-finite"),
        ([("A1", "Assets", "USD", 1.0), ("A1", "Assets", "USD", 2.0)], "repeated"),
        ([("A1", None, "USD", 1.0)], "empty concept"),
    ],
)
def test_invalid_facts_are_refused_before_touching_data(
    db: DbUsGaap, rows: list, message: str
) -> None:
    db.replace_ticker(result("AAA", [("A0", "Assets", "USD", 1.0)]))
    with pytest.raises(ValueError, match=message):
        db.replace_ticker(result("AAA", rows))
    assert db.facts_frame()["accn"].tolist() == ["A0"]


# ------------------------------------------------------------------ batched writes
def test_batch_write_matches_one_by_one(db: DbUsGaap, db_url: str, tmp_path: Path) -> None:
    batch = [
        result("AAA", [("A1", "Assets", "USD", 1.5), ("A2", "EPS", "USD/SHARES", -0.25)]),
        result("BBB", [("B1", "Assets", "USD", 3.0), ("B1", "Assets", "EUR", 4.0)]),
        result("CCC", []),
    ]
    db.replace_ticker(result("AAA", [("OLD", "Old", "USD", 9.0)]))
    db.replace_ticker(result("ZZZ", [("Z1", "Assets", "USD", 7.0)]))
    assert write_batch(db, batch, allow_shrink=True) == [2, 2, 0]
    assert write_batch(db, batch) == [2, 2, 0]  # idempotent
    assert db.facts_frame().values.tolist() == [
        ["AAA", "A1", "Assets", "USD", 1.5],
        ["AAA", "A2", "EPS", "USD/SHARES", -0.25],
        ["BBB", "B1", "Assets", "EUR", 4.0],
        ["BBB", "B1", "Assets", "USD", 3.0],
        ["ZZZ", "Z1", "Assets", "USD", 7.0],
    ]
    assert db.filing_count() == 4


def test_batch_write_refuses_bad_tickers_and_keeps_the_rest(db: DbUsGaap) -> None:
    db.replace_ticker(result("BAD", [("X0", "Assets", "USD", 1.0)]))
    outcomes = write_batch(
        db,
        [
            result("AAA", [("A1", "Assets", "USD", 1.0)]),
            result("BAD", [("X1", "Assets", "USD", float("nan"))]),
            result("CCC", [("C1", "Assets", "USD", 2.0), ("C1", "Assets", "USD", 3.0)]),
        ],
    )
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], ValueError) and "non-finite" in str(outcomes[1])
    assert isinstance(outcomes[2], ValueError) and "repeated" in str(outcomes[2])
    with pytest.raises(ValueError, match="unusable"):
        db.replace_ticker(ReadResult(source="ERR.csv", ticker="ERR", error="empty file"))
    assert db.facts_frame()[["ticker", "accn"]].values.tolist() == [["AAA", "A1"], ["BAD", "X0"]]


def test_failed_batch_retries_each_ticker_alone(
    db: DbUsGaap, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.replace_ticker(result("BBB", [("B0", "Assets", "USD", 1.0)]))
    real = db._writer._ensure_pairs
    calls: list[int] = []

    def poisoned(cur, pairs):
        calls.append(len(pairs))
        if ("Poison", "USD") in pairs:
            raise RuntimeError("disk full")
        return real(cur, pairs)

    monkeypatch.setattr(db._writer, "_ensure_pairs", poisoned)
    outcomes = write_batch(
        db,
        [
            result("AAA", [("A1", "Assets", "USD", 1.0)]),
            result("BBB", [("B1", "Poison", "USD", 2.0)]),
            result("CCC", [("C1", "Liabilities", "USD", 3.0)]),
        ],
        allow_shrink=True,
    )
    monkeypatch.undo()
    assert len(calls) == 4  # the batch, then one transaction per ticker
    assert outcomes[0] == 1 and outcomes[2] == 1
    assert isinstance(outcomes[1], RuntimeError)
    # the failed ticker keeps its previous data; the others are written
    assert db.facts_frame()[["ticker", "accn"]].values.tolist() == [
        ["AAA", "A1"],
        ["BBB", "B0"],
        ["CCC", "C1"],
    ]


def test_replace_fact_columns_records_source_files_with_the_facts(
    db: DbUsGaap, tmp_path: Path
) -> None:
    from narrative_pipeline.db import SourceFileState
    from narrative_pipeline.readers.base import concat_fact_columns, fact_columns_from_result

    columns = concat_fact_columns(
        [
            fact_columns_from_result(result("AAA", [("A1", "Assets", "USD", 1.0)])),
            fact_columns_from_result(result("BBB", [("B1", "Assets", "USD", 2.0)])),
        ]
    )
    state = SourceFileState(str(tmp_path / "AAA.csv"), "AAA", 10, 1.0, "ab" * 32)
    assert db.replace_fact_columns(columns, [state, None]) == [1, 1]
    recorded = db.source_file_state()
    assert [s.ticker for s in recorded.values()] == ["AAA"]
    with pytest.raises(ValueError, match="twice"):
        db.replace_fact_columns(concat_fact_columns([columns, columns]))


def test_many_facts_use_multi_row_inserts_exactly(db: DbUsGaap) -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0, 1e9, 1234) * 10.0 ** rng.integers(-12, 12, 1234)
    rows = [(f"A{i % 7}", f"C{i // 7}", "USD", float(v)) for i, v in enumerate(values)]
    assert write_batch(db, [result("AAA", rows)]) == [1234]
    frame = db.facts_frame()
    got = dict(zip(zip(frame["accn"], frame["concept"], strict=True), frame["value"], strict=True))
    assert got == {(a, c): v for a, c, _, v in rows}


def test_fact_reader_helpers_read_what_the_database_holds(
    db: DbUsGaap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Helper processes (db/fact_reader.py) open this back end themselves (SQLite file or
    MySQL server) and give the same facts, in the same order, as the in-process read."""
    from narrative_pipeline import pipe_worker
    from narrative_pipeline.db import fact_readback, fact_reader
    from narrative_pipeline.sample_data import generate_sample_csvs
    from narrative_pipeline.us_gaap import ingest

    generate_sample_csvs(tmp_path / "csvs", filings_per_ticker=3)
    ingest.load_csv_files(tmp_path / "csvs", db, workers=1)
    monkeypatch.setattr(fact_readback, "HELPER_MIN_ROW_FACTS", 0)  # helpers even for a small table
    started: list[dict] = []
    real_init = fact_reader._Helper.__init__

    def counting(self: fact_reader._Helper, source: dict) -> None:
        started.append(source)
        real_init(self, source)

    monkeypatch.setattr(fact_reader._Helper, "__init__", counting)
    by_helpers = [row for c in db.iter_fact_codes(150) for row in c.frame().values.tolist()]
    assert started and set(started[0]) == ({"sqlite"} if db.is_sqlite else {"mysql"})
    monkeypatch.setenv(pipe_worker.ENV_PROCESSES, "0")
    in_process = [row for c in db.iter_fact_codes(150) for row in c.frame().values.tolist()]
    assert by_helpers == in_process == db.facts_frame().values.tolist() and len(in_process) > 50
