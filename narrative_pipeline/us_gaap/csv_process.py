"""CSV batches parsed in a worker process while this process writes the database.

Parsing (Arrow kernels plus per-file Python) and the SQLite writes both hold the GIL for most
of their time, so a reading thread does not use a second core; a process does. The worker
(readers/csv_worker.py) sends each batch back as its `FactColumns` (numpy arrays and short
lists: cheap to pickle) and per-file reports without DataFrames, at most BATCHES_AHEAD batches
ahead, so memory stays flat whatever the corpus size.

While the worker imports its modules (~0.5 s), this process reads the first batches itself,
and later one more whenever it had to wait for the worker. Whoever reads a batch takes its
files' fingerprints first (an edit made while reading shows up as a change next run). If the
worker dies or an answer does not come back whole, that batch and every later one are read
here: only answers received whole are written, so no file is lost or loaded twice.

NARRATIVE_INGEST_PROCESSES=0 turns the worker off (every batch read in this process).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from narrative_pipeline.pipe_worker import PipeWorker, WorkerGone, processes_enabled
from narrative_pipeline.us_gaap.read_ahead import capture, read_csv_batch

log = logging.getLogger(__name__)

BATCHES_AHEAD = 2  # asked of the worker while this process writes one
HEAD_START = 4  # batches read here while the worker starts (~0.5 s of imports)
MIN_BATCHES = HEAD_START + 4  # fewer: too few batches left for the worker to pay its start
WAITED_S = 0.03  # waited longer for the worker: this process reads the next batch itself
WORKER_READ = ("narrative_pipeline.readers.csv_worker", "read_for_transfer")  # tests swap it


def use_worker_process(n_batches: int) -> bool:
    """A worker process pays with several batches and a second core, unless turned off."""
    return processes_enabled() and n_batches >= MIN_BATCHES and (os.cpu_count() or 1) >= 2


class CsvWorker(PipeWorker):
    """The CSV reader child process (readers/csv_worker.py)."""

    def __init__(self, concepts: set[str] | None) -> None:
        super().__init__(
            "narrative_pipeline.readers.csv_worker",
            {"concepts": concepts, "read": WORKER_READ},
            "CSV worker",
        )


def read_batches_in_worker(
    batches: list[list[Path]], concepts: set[str] | None
) -> Iterator[tuple[list[Path], Any]]:
    """(batch, outcome) in order, the outcome as `read_ahead.read_csv_batch` gives it (or the
    exception the read raised). This process reads the first HEAD_START batches while the
    worker starts, then one more each time it had to wait for the worker (parsing a batch
    takes the worker a little longer than writing one takes this process); the worker
    parses the rest, BATCHES_AHEAD at a time."""

    def read_here(batch: list[Path]) -> Any:
        return capture(lambda b: read_csv_batch(b, concepts), batch)

    worker = CsvWorker(concepts)
    plan = _Plan(worker, batches)
    i = 0
    try:
        while i < len(batches):
            plan.assign()
            outcome = read_here(batches[i]) if i in plan.here else plan.receive()
            i += 1
            yield batches[i - 1], outcome
    except WorkerGone as exc:
        log.warning("%s; reading the CSV batches from %s onwards here", exc, batches[i][0])
        worker.close(kill=True)
        for batch in batches[i:]:
            yield batch, read_here(batch)
    finally:
        worker.close()  # killed if answers are still coming: nobody will read them


class _Plan:
    """Which batches the worker parses (asked in order, BATCHES_AHEAD outstanding) and which
    this process reads (`here`)."""

    def __init__(self, worker: CsvWorker, batches: list[list[Path]]) -> None:
        self.worker, self.batches = worker, batches
        self.here: set[int] = set(range(min(HEAD_START, len(batches))))
        self.next = 0  # first batch not yet assigned
        self.take_one = False

    def assign(self) -> None:
        while self.next < len(self.batches) and self.worker.outstanding < BATCHES_AHEAD:
            if self.next in self.here or self.take_one:
                self.here.add(self.next)
                self.take_one = False
            else:
                self.worker.ask(self.batches[self.next])
            self.next += 1

    def receive(self) -> Any:
        """The next batch's outcome from the worker, as `read_ahead.read_csv_batch` gives it."""
        started = time.perf_counter()
        answer = self.worker.receive()
        self.take_one = time.perf_counter() - started > WAITED_S
        return answer
