"""A folder of single-document companyfacts files (`.json`, `.json.gz`) is read like a zip's
members (us_gaap/ingest.py `_load_documents`, readers/companyfacts.py `read_document_files`):
a helper process parses some files, the writer stores them a batch per transaction, and each
file is recorded with its ticker. The database ends as loading the files one by one leaves it;
bad files are reported failed, never loaded; unchanged files are not read again."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.readers import companyfacts, companyfacts_worker
from narrative_pipeline.us_gaap import ingest
from narrative_pipeline_tests.test_db_backends import db_url  # noqa: F401 - fixture
from narrative_pipeline_tests.test_readers_companyfacts_fast import random_document

BAD = {"CIK0000000009.json": b"not json", "CIK0000000014.json": b""}


def _folder(tmp_path: Path) -> Path:
    """Enough files for the helper process: random documents (some gzipped) and bad ones."""
    rng = random.Random(5)
    folder = tmp_path / "landing"
    folder.mkdir()
    for i in range(companyfacts_worker.MIN_MEMBERS + 8):
        name = f"CIK{i:010d}.json"
        data = BAD.get(name, random_document(rng))
        if i % 5 == 3:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def _state(db: DbUsGaap) -> tuple:
    files = sorted(
        (Path(p).name, s.ticker, s.size, s.sha) for p, s in db.source_file_state().items()
    )
    return db.facts_frame().values.tolist(), db.filings_frame().values.tolist(), files


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "RESULT_BATCH_TICKERS", 4)  # several transactions


@pytest.mark.parametrize("processes", ["0", "1"])
def test_a_folder_is_stored_as_loading_its_files_one_by_one_stores_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    small_batches: None,
    processes: str,
) -> None:
    folder = _folder(tmp_path)
    files = sorted(folder.iterdir())
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", processes)
    seen: list[tuple[int, int]] = []
    db = DbUsGaap(f"sqlite:///{tmp_path / 'folder.sqlite'}")
    with caplog.at_level("INFO", logger=companyfacts_worker.__name__):
        report = ingest.load_companyfacts(folder, db, progress=lambda d, t, p: seen.append((d, t)))
    helped = f"{len(files)} companyfacts files: " in caplog.text  # the helper process's line
    assert helped == (processes == "1")
    one_by_one = DbUsGaap(f"sqlite:///{tmp_path / 'single.sqlite'}")
    for path in files:
        ingest.load_companyfacts(path, one_by_one)
    assert _state(db) == _state(one_by_one)
    skipped = sorted(Path(s.path).name for s in report.skipped_files)
    assert skipped == sorted(BAD) and report.files_loaded == len(files) - len(BAD)
    assert report.facts_written == db.fact_count() > 300
    assert seen == [(k, len(files)) for k in range(1, len(files) + 1)]
    # Each good file is recorded with its ticker; the bad ones are not, so they are read again.
    again = ingest.load_companyfacts(folder, db)
    assert again.files_unchanged == len(files) - len(BAD) and again.files_loaded == 0
    assert sorted(Path(s.path).name for s in again.skipped_files) == sorted(BAD)


def test_only_a_changed_file_is_read_again(tmp_path: Path, small_batches: None) -> None:
    folder = _folder(tmp_path)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ingest.load_companyfacts(folder, db)
    changed = folder / "CIK0000000004.json"
    changed.write_bytes(random_document(random.Random(99)))
    report = ingest.load_companyfacts(folder, db)
    assert report.files_loaded == 1 and report.files_unchanged == len(list(folder.iterdir())) - 3
    reference = DbUsGaap(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    ingest.load_companyfacts(changed, reference)
    ticker = companyfacts.ticker_from_name(changed.name)
    mine = db.facts_frame()
    assert mine[mine["ticker"] == ticker].reset_index(drop=True).equals(reference.facts_frame())


def test_a_reader_bug_fails_that_file_and_the_rest_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None
) -> None:
    folder = _folder(tmp_path)
    files = sorted(folder.iterdir())
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "0")
    original = companyfacts.read_fingerprinted
    broken = files[6]

    def read_or_break(path: Path, taxonomy: set[str] | None = None):
        if path == broken:
            raise RuntimeError("reader bug")
        return original(path, taxonomy)

    monkeypatch.setattr(companyfacts, "read_fingerprinted", read_or_break)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    report = ingest.load_companyfacts(folder, db)
    reasons = {Path(s.path).name: s.reason for s in report.skipped_files}
    assert reasons[broken.name] == "failed while reading: reader bug"
    assert sorted(reasons) == sorted([*BAD, broken.name])
    assert report.files_loaded == len(files) - len(BAD) - 1
    recorded = {Path(p).name for p in db.source_file_state()}
    assert broken.name not in recorded and len(recorded) == report.files_loaded


def test_a_folder_into_each_backend_stores_what_sqlite_file_by_file_stores(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    small_batches: None,
    db_url: str,  # noqa: F811 - the imported fixture: SQLite, and MariaDB under `make test`
) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "1")
    db = DbUsGaap(db_url)
    try:
        report = ingest.load_companyfacts(folder, db)
        reference = DbUsGaap(f"sqlite:///{tmp_path / 'reference.sqlite'}")
        for path in sorted(folder.iterdir()):
            ingest.load_companyfacts(path, reference)
        assert report.files_loaded == len(list(folder.iterdir())) - len(BAD)
        assert db.facts_frame().values.tolist() == reference.facts_frame().values.tolist()
        assert _state(db)[2] == _state(reference)[2]  # each file recorded with its ticker
    finally:
        db.close()


@pytest.mark.parametrize("damage", ["cut", "empty", "not json"])
def test_a_damaged_file_in_a_folder_keeps_its_stored_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None, damage: str
) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "1")
    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ingest.load_companyfacts(folder, db)
    before = _state(db)
    victim = folder / "CIK0000000006.json"
    text = victim.read_bytes()
    victim.write_bytes({"cut": text[: len(text) // 2], "empty": b"", "not json": b"[1,"}[damage])
    report = ingest.load_companyfacts(folder, db)
    assert victim.name in {Path(s.path).name for s in report.skipped_files}
    assert report.files_loaded == 0
    assert _state(db) == before  # every stored fact, filing and source-file row as it was
    again = ingest.load_companyfacts(folder, db)  # still failed, never "unchanged"
    assert victim.name in {Path(s.path).name for s in again.skipped_files}
