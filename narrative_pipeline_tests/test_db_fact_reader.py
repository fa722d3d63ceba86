"""Fact groups read by helper processes (db/fact_reader.py): the same rows, in the same order,
as the in-process read; a dead helper's groups are read here; a read error reaches the caller.
(fact_block itself: test_db_fact_blocks.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline import pipe_worker
from narrative_pipeline.db import DbUsGaap, fact_readback, fact_reader
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.us_gaap import ingest


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> DbUsGaap:
    root = tmp_path_factory.mktemp("facts")
    generate_sample_csvs(root / "csvs", filings_per_ticker=4)
    database = DbUsGaap(f"sqlite:///{root / 'db.sqlite'}")
    ingest.load_csv_files(root / "csvs", database, workers=1)
    return database


@pytest.fixture(autouse=True)
def helpers_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Helpers even for these small tables (they pay from 500k facts read row by row)."""
    monkeypatch.setattr(fact_readback, "HELPER_MIN_ROW_FACTS", 0)


def _codes(db: DbUsGaap, target_rows: int) -> list[tuple[list, int]]:
    """(rows as ticker/accn/concept/unit/value lists, group size) of every group."""
    return [(c.frame().values.tolist(), len(c)) for c in db.iter_fact_codes(target_rows)]


def _flat(groups: list[tuple[list, int]]) -> list:
    return [row for rows, _ in groups for row in rows]


def test_helpers_read_the_same_rows_in_the_same_order(
    db: DbUsGaap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pipe_worker.ENV_PROCESSES, "0")
    in_process = _codes(db, 200)
    monkeypatch.setenv(pipe_worker.ENV_PROCESSES, "1")
    started = []
    original = fact_reader._Helper.__init__

    def counting_init(self: fact_reader._Helper, path: str) -> None:
        started.append(path)
        original(self, path)

    monkeypatch.setattr(fact_reader._Helper, "__init__", counting_init)
    by_helpers = _codes(db, 200)
    assert started, "no helper process was started"
    assert len(in_process) > 3  # several groups, so several helpers took turns
    assert _flat(by_helpers) == _flat(in_process) == db.facts_frame().values.tolist()
    assert all(size <= 2 * 200 for _, size in by_helpers[:-1])  # groups stay bounded


def test_groups_are_whole_tickers_in_ticker_order(db: DbUsGaap) -> None:
    tickers_seen: list[str] = []
    for codes in db.iter_fact_codes(150):
        tickers = sorted(set(codes.filing_ticker.take(codes.filing_pos).to_pylist()))
        assert not set(tickers) & set(tickers_seen), "a ticker was split across groups"
        tickers_seen += tickers
    assert tickers_seen == sorted(tickers_seen) == db.tickers()


def test_a_helper_that_dies_has_its_groups_read_here(
    db: DbUsGaap, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = db.facts_frame().values.tolist()
    original = fact_reader._Helper.receive
    answers = []

    def die_on_second(self: fact_reader._Helper) -> object:
        answers.append(1)
        if len(answers) == 2:
            self.proc.kill()
            self.proc.wait()
        return original(self)

    monkeypatch.setattr(fact_reader._Helper, "receive", die_on_second)
    assert _flat(_codes(db, 200)) == expected
    assert len(answers) == 2  # the second answer was lost, the rest read in this process


def test_a_read_error_in_a_helper_names_the_file(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.sqlite"
    not_a_db.write_bytes(b"this is not a SQLite file" * 100)
    groups = [("a", [1]), ("b", [2])]
    with pytest.raises(RuntimeError, match="notes.sqlite"):
        source = {"sqlite": str(not_a_db)}
        list(fact_reader.read_groups_in_helpers(source, groups, 1, lambda ids: None))


def test_read_fact_rows_of_no_filings_is_empty(db: DbUsGaap) -> None:
    rows = db._fact_rows([])
    assert rows.dtype == fact_reader.FACT_ROW_DTYPE and len(rows) == 0
    everything = db._fact_rows(None)
    assert len(everything) == db.fact_count() and np.all(np.isfinite(everything["value"]))


def test_error_messages_name_the_database_never_the_password() -> None:
    args = {"host": "db.example", "port": 3306, "database": "narrative", "password": "s3cret"}
    described = fact_reader._describe({"mysql": args})
    assert described == "mysql://db.example:3306/narrative" and "s3cret" not in described
    assert fact_reader._describe({"sqlite": "/data/x.sqlite"}) == "/data/x.sqlite"
    assert "unknown" in fact_reader._describe("not a dict")


def test_the_decode_sort_is_the_stable_argsort() -> None:
    """`_stable_order` (keys and positions packed, sorted as values) = the stable argsort,
    ties in input order; keys too wide to pack take the stable argsort itself."""
    rng = np.random.default_rng(7)
    for n, top in ((0, 10), (1, 10), (2, 1), (5_000, 40), (70_000, 3_000_000)):
        key = rng.integers(0, top, n).astype(np.int64)
        expected = np.argsort(key, kind="stable")
        np.testing.assert_array_equal(fact_readback._stable_order(key, top), expected)
    wide = np.array([5, 3, 5, 3], dtype=np.int64)
    np.testing.assert_array_equal(fact_readback._stable_order(wide, 1 << 62), [1, 3, 0, 2])
