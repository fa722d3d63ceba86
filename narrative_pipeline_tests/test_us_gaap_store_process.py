"""CSV batches parsed in a worker process: the same database and report as reading in process,
and a worker that dies hands over to this process without losing or doubling any file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from narrative_pipeline import pipe_worker
from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.us_gaap import csv_process, ingest
from narrative_pipeline_tests.test_us_gaap_store_batches import write_mixed_folder

DIE_ON = "DIE"  # a batch holding a file whose name starts with this kills the worker


def die_on_marked_batch(paths: list[Path], concepts: set[str] | None):
    """Worker read that kills its process on the marked batch (the worker imports it by name)."""
    from narrative_pipeline.readers import csv_worker

    if any(Path(p).name.startswith(DIE_ON) for p in paths):
        os._exit(3)
    return csv_worker.read_for_transfer(paths, concepts)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    csvs = write_mixed_folder(tmp_path / "csvs")
    (csvs / "c").mkdir()
    for name in (f"{DIE_ON}A", "ZZY", "ZZZ"):  # copies under new tickers, in the last batches
        (csvs / "c" / f"{name}.csv").write_bytes((csvs / "a" / "AAPL.csv").read_bytes())
    return csvs


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Small batches, worker always used and waited for; records each batch taken from it."""
    monkeypatch.setattr(ingest, "CSV_BATCH_FILES", 2)
    monkeypatch.setattr(csv_process, "MIN_BATCHES", 1)
    monkeypatch.setattr(csv_process, "HEAD_START", 1)
    monkeypatch.setattr(csv_process, "WAITED_S", 1e9)  # never read a batch here after the first
    monkeypatch.delenv(pipe_worker.ENV_PROCESSES, raising=False)
    seen: list[bool] = []
    original = csv_process.CsvWorker.receive

    def spy(worker):
        try:
            answer = original(worker)
        except csv_process.WorkerGone:
            seen.append(False)
            raise
        if answer != "ready":
            seen.append(True)
        return answer

    monkeypatch.setattr(csv_process.CsvWorker, "receive", spy)
    original_ask = csv_process.CsvWorker.ask

    def ask_spy(worker, batch):
        # A dead worker shows up on whichever comes first: a send into its closed pipe (here)
        # or a read of its answer (above).
        try:
            return original_ask(worker, batch)
        except csv_process.WorkerGone:
            seen.append(False)
            raise

    monkeypatch.setattr(csv_process.CsvWorker, "ask", ask_spy)
    return seen


def _state(db: DbUsGaap, report) -> tuple:
    files = sorted((Path(p).name, s.ticker, s.sha) for p, s in db.source_file_state().items())
    skipped = [(Path(s.path).name, s.reason) for s in report.skipped_files]
    counts = (report.files_loaded, report.facts_written, report.skipped_cells, report.files_seen)
    facts = db.facts_frame().values.tolist()
    return facts, files, skipped, counts, report.non_numeric_units, report.messages


def _in_process(folder: Path, path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    with monkeypatch.context() as m:
        m.setenv(pipe_worker.ENV_PROCESSES, "0")
        db = DbUsGaap(f"sqlite:///{path}")
        return _state(db, ingest.load_csv_files(folder, db))


def test_worker_process_gives_the_same_database_and_report(
    folder: Path, tmp_path: Path, received: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _in_process(folder, tmp_path / "here.sqlite", monkeypatch)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'worker.sqlite'}")
    got = _state(db, ingest.load_csv_files(folder, db))
    assert received and all(received)  # every batch but the first came from the worker
    assert len(received) == len(ingest.csv_batches(sorted(folder.rglob("*.csv")))) - 1
    assert got == expected
    assert len(got[0]) > 10 and got[2] == [("EMPTY.csv", "empty file: no header, nothing to load")]


def test_a_dead_worker_hands_over_without_loss(
    folder: Path, tmp_path: Path, received: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _in_process(folder, tmp_path / "here.sqlite", monkeypatch)
    monkeypatch.setattr(csv_process, "WORKER_READ", (__name__, die_on_marked_batch.__name__))
    db = DbUsGaap(f"sqlite:///{tmp_path / 'worker.sqlite'}")
    got = _state(db, ingest.load_csv_files(folder, db))
    assert received[:-1] and all(received[:-1]) and received[-1] is False  # died mid-run
    assert got == expected
    again = ingest.load_csv_files(folder, db)
    assert again.files_unchanged == expected[3][0] and again.facts_written == 0


def test_worker_is_off_for_few_batches_or_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pipe_worker.ENV_PROCESSES, raising=False)
    assert not csv_process.use_worker_process(csv_process.MIN_BATCHES - 1)
    assert csv_process.use_worker_process(csv_process.MIN_BATCHES) == ((os.cpu_count() or 1) >= 2)
    monkeypatch.setenv(pipe_worker.ENV_PROCESSES, "0")
    assert not csv_process.use_worker_process(100)
