"""The companyfacts reader hands the writer its batch directly (companyfacts_fast.ColumnsResult):
the batch equals what base.fact_columns_from_result makes of the frames, field by field, on
both fast paths (native scanner, Arrow); the frames are built only when read; and a zip
ingested through the batch leaves the database identical to the frames path."""

from __future__ import annotations

import gzip
import json
import pickle
import random
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.readers import companyfacts_native, companyfacts_worker
from narrative_pipeline.readers.base import (
    FactColumns,
    ReadResult,
    empty_facts,
    empty_filings,
    fact_columns_from_result,
    failed,
)
from narrative_pipeline.readers.companyfacts_fast import ColumnsResult, failed_result
from narrative_pipeline.us_gaap import ingest
from narrative_pipeline_tests.test_readers_companyfacts_fast import ODD, _read, random_document

PATHS = ["native", "arrow"]


def _set_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv(companyfacts_native.ENV, "1" if path == "native" else "0")
    if path == "native" and companyfacts_native.scanner() is None:
        pytest.skip("native scanner not built (no compiler at install time)")


def assert_same_batch(got: FactColumns, expected: FactColumns) -> None:
    for name in ("sources", "tickers", "filings", "concepts", "units"):
        assert getattr(got, name) == getattr(expected, name), name
    for name in ("ticker_index", "filing_index", "concept_code", "unit_code", "values"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
    # Same Python types in the filing rows (the writer's content stamp is their repr).
    assert repr(got.filings) == repr(expected.filings)


def _check(result: ReadResult) -> bool:
    """The batch of a ColumnsResult equals the frames' conversion; False for other results."""
    if not isinstance(result, ColumnsResult) or result.batch is None:
        return False
    batch = result.fact_columns()
    assert "_facts" not in result.__dict__ and "_filings" not in result.__dict__  # not built
    assert result.fact_count == len(batch.values) > 0
    assert_same_batch(batch, fact_columns_from_result(result))  # builds the frames
    return True


@pytest.mark.parametrize("path", PATHS)
def test_the_batch_is_the_frames_conversion(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_path(monkeypatch, path)
    rng = random.Random(5)
    documents = [random_document(rng) for _ in range(60)] + list(ODD.values())
    batched = 0
    for data in documents:
        for taxonomy in (None, {"C1", "C2", "A", "B"}):
            batched += _check(_read(data, taxonomy))
    assert batched > 60  # most documents take a fast path (odd values go to the reference)


@pytest.mark.parametrize("path", PATHS)
def test_real_documents_batch_is_the_frames_conversion(
    shared_data: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_path(monkeypatch, path)
    paths = sorted((shared_data / "companyfacts").glob("*.json.gz"))
    assert paths
    for file in paths:
        data = gzip.decompress(file.read_bytes())
        names = sorted(json.loads(data)["facts"]["us-gaap"])
        assert _check(_read(data, None))
        assert _check(_read(data, set(names[::2])))


def test_the_reference_path_has_no_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _read(ODD["non-numeric values"], None)  # text val: the reference path reads it
    assert isinstance(result, ColumnsResult) and result.batch is None
    assert_same_batch(result.fact_columns(), fact_columns_from_result(result))


def test_frames_are_built_when_read_and_pickled_only_then() -> None:
    result = _read(random_document(random.Random(3)), None)
    assert isinstance(result, ColumnsResult) and result.batch is not None
    copy = pickle.loads(pickle.dumps(result))
    assert "_facts" not in copy.__dict__
    assert copy.facts.equals(result.facts) and copy.filings.equals(result.filings)
    assert_same_batch(copy.fact_columns(), result.fact_columns())


def test_an_assigned_frame_replaces_the_batch() -> None:
    result = _read(random_document(random.Random(3)), None)
    assert isinstance(result, ColumnsResult) and result.fact_count > 1
    result.facts = result.facts.iloc[:1].reset_index(drop=True)
    assert result.fact_count == 1
    assert len(result.fact_columns().values) == 1


def test_a_result_never_filled_has_the_empty_frames() -> None:
    """ColumnsResult does not build ReadResult's empty frames up front, but reads as if it
    had: the contract's columns and dtypes, no facts, an empty batch; given frames are kept."""
    result = ColumnsResult("s", "T")
    assert "_facts" not in result.__dict__ and "_filings" not in result.__dict__
    for got, expected in ((result.facts, empty_facts()), (result.filings, empty_filings())):
        assert list(got.columns) == list(expected.columns)
        assert list(got.dtypes) == list(expected.dtypes) and got.empty
    assert result.fact_count == 0 and len(result.fact_columns().values) == 0
    assert repr(result).replace("ColumnsResult", "ReadResult") == repr(ReadResult("s", "T"))
    given = ColumnsResult("s", "T", facts=empty_facts().iloc[:0], error="bad")
    assert given.error == "bad" and given.fact_count == 0 and given.__dict__["_changed"]


def test_a_failed_member_reads_as_base_failed() -> None:
    got, expected = failed_result("z!m", "T", "bad"), failed("z!m", "T", "bad")
    assert repr(got).replace("ColumnsResult", "ReadResult") == repr(expected)
    assert got.error == "bad" and got.messages == ["bad"] and got.fact_count == 0
    assert list(got.filings.dtypes) == list(expected.filings.dtypes)


def _dump(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return list(conn.iterdump())


def _archive(tmp_path: Path, shared: Path | None) -> Path:
    """Enough members for the helper process: random documents, a bad one, real ones."""
    rng = random.Random(11)
    archive = tmp_path / "companyfacts.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(companyfacts_worker.MIN_MEMBERS + 6):
            zf.writestr(f"CIK{i:010d}.json", random_document(rng) if i != 9 else b"not json")
        for file in sorted((shared / "companyfacts").glob("*.json.gz")) if shared else []:
            zf.writestr(file.name.replace(".gz", ""), gzip.decompress(file.read_bytes()))
    return archive


@pytest.mark.parametrize("processes", ["0", "1"])
def test_a_zip_ingested_through_the_batch_stores_what_the_frames_path_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: str
) -> None:
    from narrative_pipeline_tests.conftest import SHARED_DATA

    shared = SHARED_DATA if (SHARED_DATA / "companyfacts").is_dir() else None
    archive = _archive(tmp_path, shared)
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", processes)
    dbs = {}
    for way in ("batch", "frames"):
        with monkeypatch.context() as patch:
            if way == "frames":  # the path before: frames built, then factorized back
                patch.setattr(ColumnsResult, "fact_columns", ReadResult.fact_columns)
            db_path = tmp_path / f"{way}.sqlite"
            db = DbUsGaap(f"sqlite:///{db_path}")
            report = ingest.load_companyfacts(archive, db)
        assert report.facts_written > 1000 and len(report.skipped_files) == 1
        dbs[way] = (db, db_path)
    (batch, batch_path), (frames, frames_path) = dbs["batch"], dbs["frames"]
    assert batch.facts_frame().equals(frames.facts_frame())
    assert batch.filings_frame().equals(frames.filings_frame())
    assert _dump(batch_path) == _dump(frames_path)  # every table, ids and stamps included
