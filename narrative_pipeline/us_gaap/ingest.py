"""Step 1: source files -> database, incrementally (unchanged files are not read again).

Parsing of the next files overlaps with the database write of the current one (a small
bounded prefetch in threads: pyarrow and SQLite release the GIL), so memory holds at most a
few files' (or CSV batches') results whatever the corpus size. sec-fetcher CSVs are read and
written CSV_BATCH_FILES at a time: one set of Arrow kernels and one transaction per batch,
since per-file fixed costs (kernel calls, DataFrames, a transaction) outweigh the work on a
~2k-fact file. With several batches, a worker process parses them (csv_process.py) while this
process writes: the parse and the SQLite writes mostly hold the GIL, so threads overlap
them only in part (NARRATIVE_INGEST_PROCESSES=0: threads only).

Stored data is never lost to a bad file: a reader error (empty, torn, no usable filing, over a
cap) or a write the database refuses (a file that would drop filings it supplied before, see
db/sources.py) leaves the ticker's stored rows as they are and lists the file in
`report.skipped_files` with the reason (the CLI exits non-zero, raw_records shows a
failed-files table). `allow_shrink=True` lets a file replace its own earlier filings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from narrative_pipeline.db.protocol import IngestTarget
from narrative_pipeline.readers.landing import COMPANYFACTS_SUFFIXES, CSV_SUFFIXES
from narrative_pipeline.us_gaap.read_ahead import prefetched, read_csv_batch
from narrative_pipeline.us_gaap.reports import IngestReport, SkippedFile

if TYPE_CHECKING:  # the readers and the database are imported when a load starts
    from narrative_pipeline.db.database import SourceFileState
    from narrative_pipeline.db.sources import SourceNote
    from narrative_pipeline.readers.base import FactColumns, FileReport, ReadResult
    from narrative_pipeline.readers.sec_fetcher_batch import CsvBatch

Progress = Callable[[int, int, str], None]  # (files done, files total, current path)
CSV_BATCH_FILES = 64  # files read and written together (per-file fixed costs dominate)
RESULT_BATCH_TICKERS = 64  # zip members written per transaction (one commit each otherwise)
RESULT_BATCH_FACTS = 400_000  # ... unless they hold more facts than this (bounded memory)


def _taxonomy_filter(db: IngestTarget) -> set[str] | None:
    """The taxonomy's concept names, or None (take every concept column) when none is loaded."""
    concepts = db.taxonomy_concepts()
    return set(concepts) if concepts else None


def _fingerprinted(read: Callable[[Path], Any]) -> Callable[[Path], tuple[tuple, Any]]:
    """read(path) preceded by the file's (size, mtime, sha): taken first, so an edit made while
    reading shows up as a change on the next run instead of being recorded as loaded."""
    from narrative_pipeline.db.fingerprint import file_fingerprint

    def run(path: Path) -> tuple[tuple, Any]:
        fingerprint = file_fingerprint(path)
        return fingerprint, read(path)

    return run


def _merge_result(report: IngestReport, result: ReadResult | FileReport) -> None:
    """Add one ReadResult's counts and messages to the report."""
    report.skipped_cells += int(result.skipped_cells)
    for unit, count in result.non_numeric_units.items():
        report.non_numeric_units[unit] = report.non_numeric_units.get(unit, 0) + int(count)
    report.skipped_columns += len(result.skipped_columns)
    report.messages.extend(f"{result.source}: {m}" for m in result.messages)


def _accepted(report: IngestReport, result: ReadResult | FileReport, path: Path) -> bool:
    """Add the result to the report; False (and the file reported failed, naming it) when the
    reader could not use it, so nothing of it is written and the stored data stays."""
    _merge_result(report, result)
    if result.error:
        report.skipped_files.append(SkippedFile(result.source or str(path), result.error))
        return False
    return True


def _changed_files(report: IngestReport, db: IngestTarget, paths: list[Path]) -> list[Path]:
    """The files the database does not hold unchanged; the others are counted in the report."""
    many = getattr(db, "unchanged_source_files", None)
    unchanged = many(paths) if many else [db.source_file_unchanged(p) for p in paths]
    report.files_unchanged += sum(unchanged)
    return [path for path, same in zip(paths, unchanged, strict=True) if not same]


def _load_results(
    report: IngestReport,
    db: IngestTarget,
    paths: list[Path],
    read: Callable[[Path], Iterable[Any]],
    progress: Progress | None,
    workers: int,
    allow_shrink: bool = False,
) -> None:
    """Read each changed file (results may be several tickers, e.g. a zip) into the database."""
    started = time.perf_counter()
    todo = _changed_files(report, db, paths)
    done = report.files_unchanged
    for path, outcome in prefetched(todo, _fingerprinted(read), workers):
        done += 1
        if isinstance(outcome, Exception):
            report.skipped_files.append(SkippedFile(str(path), f"unreadable: {outcome}"))
        else:
            fingerprint, results = outcome
            _store_results(report, db, path, fingerprint, results, allow_shrink=allow_shrink)
        if progress is not None:
            progress(done, len(paths), str(path))
    report.timings["files_to_db"] = round(time.perf_counter() - started, 4)


def _write_failure(outcome: Exception) -> str:
    """A refused or failed write as a skipped-file reason (refusals explain themselves)."""
    return str(outcome) if isinstance(outcome, ValueError) else f"failed while writing: {outcome}"


def _add_notes(report: IngestReport, notes: list[SourceNote]) -> None:
    """Filings shared between sources and their conflicting values, into the report."""
    for note in notes:
        report.conflicting_facts += int(note.conflicts)
        report.messages.append(f"{note.source}: {note.message}")


def _store_results(
    report: IngestReport,
    db: IngestTarget,
    path: Path,
    fingerprint: tuple,
    results: Iterable[ReadResult],
    allow_shrink: bool = False,
) -> None:
    """Write each result of one file (a lazy iterator for a bulk zip), then record the file.

    A one-ticker file is recorded in the same transaction as its facts. A multi-ticker file
    (companyfacts zip) is written RESULT_BATCH_TICKERS results per transaction (each ticker
    refused or retried alone as in `replace_fact_columns`) and recorded after all of them. One
    bad file never stops the run.
    """
    results = results if isinstance(results, list) else iter(results)
    if isinstance(results, list) and len(results) == 1:
        _store_single(report, db, path, fingerprint, results[0], allow_shrink)
        return
    batch = _ResultBatch(report, db, allow_shrink)
    try:
        for result in results:
            if _accepted(report, result, path):
                batch.add(result)
            else:
                batch.failed = True
        batch.flush()
    except Exception as exc:  # noqa: BLE001 - keep what was loaded, report the file
        batch.failed = True
        report.skipped_files.append(SkippedFile(str(path), f"failed while reading: {exc}"))
    if batch.written:
        report.files_loaded += 1
        if not batch.failed:
            # A file that supplied one ticker is recorded with it (else with its name).
            one = batch.written[0] if len(batch.written) == 1 else None
            size, mtime, sha = fingerprint
            db.record_source_file(path, size, mtime, sha, ticker=one)


def _store_single(
    report: IngestReport,
    db: IngestTarget,
    path: Path,
    fingerprint: tuple,
    result: ReadResult,
    allow_shrink: bool,
) -> None:
    """A one-ticker file: its facts and its source_file row in one transaction."""
    from narrative_pipeline.db.database import SourceFileState

    if not _accepted(report, result, path):
        return
    notes: list[SourceNote] = []
    try:
        state = SourceFileState(str(path), result.ticker, *fingerprint)
        written = db.replace_ticker(
            result, source_file=state, allow_shrink=allow_shrink, notes=notes
        )
    except ValueError as exc:  # refused: the stored data stays
        report.skipped_files.append(SkippedFile(result.source or str(path), str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - reported as the file's failure
        report.skipped_files.append(SkippedFile(str(path), f"failed while reading: {exc}"))
        return
    _add_notes(report, notes)
    report.facts_written += int(written)
    report.files_loaded += 1


class _ResultBatch:
    """Reader results written a batch of tickers per transaction (per-transaction costs, the
    commit above all, outweigh a ~2k-fact company's write): the members of one zip (recorded as
    one source file by the caller) or single-document files (each recorded with its ticker,
    in the same transaction, and counted as loaded)."""

    def __init__(self, report: IngestReport, db: IngestTarget, allow_shrink: bool) -> None:
        self.report, self.db, self.allow_shrink = report, db, allow_shrink
        self.parts: list[FactColumns] = []
        self.states: list[SourceFileState | None] = []
        self.facts = 0
        self.failed = False
        self.written: list[str] = []  # tickers written

    def add(self, result: ReadResult, state: SourceFileState | None = None) -> None:
        if any(part.tickers[0] == result.ticker for part in self.parts):
            self.flush()  # a ticker twice: the later one replaces the earlier, as one by one
        part = result.fact_columns()
        self.parts.append(part)
        self.states.append(state)
        self.facts += len(part.values)
        if len(self.parts) >= RESULT_BATCH_TICKERS or self.facts >= RESULT_BATCH_FACTS:
            self.flush()

    def flush(self) -> None:
        from narrative_pipeline.readers.base import concat_fact_columns

        if not self.parts:
            return
        columns = concat_fact_columns(self.parts)
        states = self.states
        self.parts, self.states, self.facts = [], [], 0
        notes: list[SourceNote] = []
        try:
            outcomes = self.db.replace_fact_columns(
                columns, states, allow_shrink=self.allow_shrink, notes=notes
            )
        except Exception as exc:  # noqa: BLE001 - every ticker of the batch is reported failed
            outcomes = [exc] * len(columns.tickers)
        _add_notes(self.report, notes)
        for t, outcome in enumerate(outcomes):
            if isinstance(outcome, Exception):
                self.failed = True
                self.report.skipped_files.append(
                    SkippedFile(columns.sources[t], _write_failure(outcome))
                )
            else:
                self.report.facts_written += int(outcome)
                self.written.append(columns.tickers[t])
                self.report.files_loaded += states[t] is not None


def load_csv_files(
    csv_dir: str | Path,
    db: IngestTarget,
    progress: Progress | None = None,
    workers: int = 2,
    allow_shrink: bool = False,
) -> IngestReport:
    """Every sec-fetcher CSV under `csv_dir` (recursively) -> database (`allow_shrink`: a file
    may drop filings it supplied before)."""
    from narrative_pipeline.readers.landing import scan_landing

    csv_dir = Path(csv_dir)
    if not csv_dir.is_dir():
        raise FileNotFoundError(f"CSV folder {csv_dir} does not exist")
    report = IngestReport(source=str(csv_dir))
    scan = scan_landing(csv_dir, CSV_SUFFIXES)
    report.messages.extend(scan.messages())
    paths = scan.files
    report.files_seen = len(paths)
    concepts = _taxonomy_filter(db)
    if concepts is None:
        report.messages.append("no US-GAAP taxonomy loaded: every concept column was taken")
    _load_csv_batches(report, db, paths, concepts, progress, workers, allow_shrink)
    return report


def csv_batches(paths: list[Path], size: int | None = None) -> list[list[Path]]:
    """`paths` in order, `size` at a time; a batch also ends before a ticker it already holds
    (two files of one ticker: the later one replaces the earlier, as when written one by one)."""
    from narrative_pipeline.readers.base import ticker_from_name

    size = size or CSV_BATCH_FILES
    batches: list[list[Path]] = []
    current: list[Path] = []
    tickers: set[str] = set()
    for path in paths:
        ticker = ticker_from_name(path.name)
        if len(current) >= size or ticker in tickers:
            batches.append(current)
            current, tickers = [], set()
        current.append(path)
        tickers.add(ticker)
    if current:
        batches.append(current)
    return batches


def _load_csv_batches(
    report: IngestReport,
    db: IngestTarget,
    paths: list[Path],
    concepts: set[str] | None,
    progress: Progress | None,
    workers: int,
    allow_shrink: bool = False,
) -> None:
    """CSV files -> database, CSV_BATCH_FILES at a time: one read of the whole batch, one
    transaction for its tickers (each ticker retried alone if the batch write fails)."""
    started = time.perf_counter()
    todo = _changed_files(report, db, paths)
    done = report.files_unchanged
    batches = csv_batches(todo)
    for batch, outcome in _read_batches(batches, concepts, workers):
        if isinstance(outcome, Exception):
            for path in batch:
                report.skipped_files.append(SkippedFile(str(path), f"unreadable: {outcome}"))
        else:
            fingerprints, read = outcome
            _store_csv_batch(report, db, batch, fingerprints, read, allow_shrink=allow_shrink)
        for path in batch:
            done += 1
            if progress is not None:
                progress(done, len(paths), str(path))
    report.timings["files_to_db"] = round(time.perf_counter() - started, 4)


def _read_batches(
    batches: list[list[Path]], concepts: set[str] | None, workers: int
) -> Iterator[tuple[list[Path], Any]]:
    """(batch, read outcome) in order: from a worker process when it pays (csv_process.py),
    else read here with a thread prefetch."""
    from narrative_pipeline.us_gaap import csv_process

    if workers >= 2 and csv_process.use_worker_process(len(batches)):
        return csv_process.read_batches_in_worker(batches, concepts)
    return prefetched(batches, lambda batch: read_csv_batch(batch, concepts), workers)


def _store_csv_batch(
    report: IngestReport,
    db: IngestTarget,
    paths: list[Path],
    fingerprints: list[tuple],
    batch: CsvBatch,
    allow_shrink: bool = False,
) -> None:
    """Write one read batch: every file without error, each recorded with its ticker."""
    from narrative_pipeline.db.database import SourceFileState

    states: list[SourceFileState | None] = [None] * len(batch.columns.tickers)
    for path, fingerprint, result, t in zip(
        paths, fingerprints, batch.reports, batch.column_of_file, strict=True
    ):
        if _accepted(report, result, path) and fingerprint is not None:
            states[t] = SourceFileState(str(path), result.ticker, *fingerprint)
    notes: list[SourceNote] = []
    outcomes = (
        db.replace_fact_columns(batch.columns, states, allow_shrink=allow_shrink, notes=notes)
        if states
        else []
    )
    _add_notes(report, notes)
    for t, outcome in enumerate(outcomes):
        if isinstance(outcome, Exception):
            report.skipped_files.append(
                SkippedFile(batch.columns.sources[t], _write_failure(outcome))
            )
        else:
            report.facts_written += int(outcome)
            report.files_loaded += 1


def companyfacts_files(path: str | Path, messages: list[str] | None = None) -> list[Path]:
    """`path` itself, or the companyfacts files (.json, .json.gz, .zip) in a folder, sorted;
    entries skipped in the folder are described in `messages`."""
    from narrative_pipeline.readers.landing import scan_landing

    path = Path(path)
    if path.is_dir():
        scan = scan_landing(path, COMPANYFACTS_SUFFIXES)
        if messages is not None:
            messages.extend(scan.messages())
        return scan.files
    if not path.exists():
        raise FileNotFoundError(f"companyfacts path {path} does not exist")
    return [path]


def load_companyfacts(
    path: str | Path,
    db: IngestTarget,
    progress: Progress | None = None,
    workers: int = 2,
    allow_shrink: bool = False,
) -> IngestReport:
    """SEC companyfacts documents (one file, a folder of them, or the bulk zip) -> database.

    In path order: a zip's members are read and written like a folder's single-document files
    (`.json`, `.json.gz`): a helper process parses some while this process writes the others,
    RESULT_BATCH_TICKERS tickers per transaction."""
    from narrative_pipeline.readers import read_companyfacts

    report = IngestReport(source=str(path))
    paths = companyfacts_files(path, report.messages)
    report.files_seen = len(paths)
    concepts = _taxonomy_filter(db)
    if concepts is None:
        report.messages.append("no US-GAAP taxonomy loaded: every concept was taken")
    read = lambda p: read_companyfacts(p, concepts)  # noqa: E731
    started = time.perf_counter()
    offset = 0
    for is_zip, run in _runs(paths, lambda p: p.suffix.lower() == ".zip"):
        shown = _offset_progress(progress, offset, len(paths), report.files_unchanged)
        if is_zip or len(run) == 1:
            _load_results(report, db, run, read, shown, workers, allow_shrink)
        else:
            _load_documents(report, db, run, concepts, shown, allow_shrink, read)
        offset += len(run)
    report.timings["files_to_db"] = round(time.perf_counter() - started, 4)
    return report


def _runs(paths: list[Path], key: Callable[[Path], bool]) -> Iterator[tuple[bool, list[Path]]]:
    """Consecutive paths with the same key, in order."""
    run: list[Path] = []
    for path in paths:
        if run and key(path) != key(run[0]):
            yield key(run[0]), run
            run = []
        run.append(path)
    if run:
        yield key(run[0]), run


def _offset_progress(
    progress: Progress | None, offset: int, total: int, unchanged_before: int
) -> Progress | None:
    """`progress` for one run of files: its (done, _, path) shown as files done in the whole
    load (`done` counts every unchanged file so far, those before this run included)."""
    if progress is None:
        return None
    return lambda done, _total, path: progress(offset + done - unchanged_before, total, path)


def _load_documents(
    report: IngestReport,
    db: IngestTarget,
    paths: list[Path],
    concepts: set[str] | None,
    progress: Progress | None,
    allow_shrink: bool,
    read: Callable[[Path], Iterable[Any]],
) -> None:
    """Single-document companyfacts files, read in order (companyfacts.read_document_files)
    and written in batches, each file recorded with its ticker's facts. A file whose read
    raises is reported failed and the rest are loaded one by one (`_load_results`)."""
    from narrative_pipeline.db.database import SourceFileState
    from narrative_pipeline.readers.companyfacts import read_document_files

    todo = _changed_files(report, db, paths)
    done = report.files_unchanged  # files of `paths` done, as `progress` counts them
    batch = _ResultBatch(report, db, allow_shrink)
    k = 0  # files of `todo` read: on an exception, todo[k] is the one that raised it
    try:
        for fingerprint, result in read_document_files(todo, concepts):
            # No fingerprint: the file could not be read, and its result says so.
            if _accepted(report, result, todo[k]) and fingerprint is not None:
                batch.add(result, SourceFileState(str(todo[k]), result.ticker, *fingerprint))
            k += 1
            if progress is not None:
                progress(done + k, len(paths), str(todo[k - 1]))
    except Exception as exc:  # noqa: BLE001 - a reader bug: that file fails, the rest go on
        if k < len(todo):
            reason = f"failed while reading: {exc}"
            report.skipped_files.append(SkippedFile(str(todo[k]), reason))
        batch.flush()
        _load_results(report, db, todo[k + 1 :], read, None, 1, allow_shrink)
        return
    batch.flush()
