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

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_PROCESSES = "NARRATIVE_INGEST_PROCESSES"
BATCHES_AHEAD = 2  # asked of the worker while this process writes one
HEAD_START = 4  # batches read here while the worker starts (~0.5 s of imports)
MIN_BATCHES = HEAD_START + 4  # fewer: too few batches left for the worker to pay its start
WAITED_S = 0.03  # waited longer for the worker: this process reads the next batch itself
WORKER_READ = ("narrative_pipeline.readers.csv_worker", "read_for_transfer")  # tests swap it


def use_worker_process(n_batches: int) -> bool:
    """A worker process pays with several batches and a second core, unless turned off."""
    setting = os.environ.get(ENV_PROCESSES, "1").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    return n_batches >= MIN_BATCHES and (os.cpu_count() or 1) >= 2


class WorkerGone(Exception):
    """The worker process died or sent something that is not a whole answer."""


class CsvWorker:
    """One reader child process; answers come back in the order the batches were sent."""

    def __init__(self, concepts: set[str] | None) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "narrative_pipeline.readers.csv_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.started = self.closed = False
        self._send({"concepts": concepts, "read": WORKER_READ})

    def _send(self, obj: Any) -> None:
        try:
            pickle.dump(obj, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError) as exc:
            raise WorkerGone(f"cannot send to the CSV worker: {exc}") from exc

    def receive(self) -> Any:
        try:
            return pickle.load(self.proc.stdout)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - EOF, a cut pickle: the worker is gone
            raise WorkerGone(f"CSV worker stopped (exit code {self.proc.poll()}): {exc!r}") from exc

    def wait_ready(self) -> None:
        """The worker's first answer says it started (raises WorkerGone if it did not)."""
        if not self.started:
            if self.receive() != "ready":
                raise WorkerGone("CSV worker did not start as expected")
            self.started = True

    def ask(self, paths: list[Path]) -> None:
        self._send(paths)

    def close(self, kill: bool = False) -> None:
        """Stop the worker (at once with `kill`); safe to call twice. Its exit (interpreter
        shutdown, ~0.1 s) is awaited in a daemon thread, not by the ingestion."""
        if self.closed:
            return
        self.closed = True
        try:
            if kill:
                raise WorkerGone("stopped")
            self._send(None)
        except WorkerGone:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        threading.Thread(target=self.proc.wait, name="csv-worker-reaper", daemon=True).start()


def read_batches_in_worker(
    batches: list[list[Path]], concepts: set[str] | None
) -> Iterator[tuple[list[Path], Any]]:
    """(batch, outcome) in order, the outcome as `ingest._read_csv_batch` gives it (or the
    exception the read raised). This process reads the first HEAD_START batches while the
    worker starts, then one more each time it had to wait for the worker (parsing a batch
    takes the worker a little longer than writing one takes this process); the worker
    parses the rest, BATCHES_AHEAD at a time."""
    from narrative_pipeline.us_gaap.ingest import _capture, _read_csv_batch

    def read_here(batch: list[Path]) -> Any:
        return _capture(lambda b: _read_csv_batch(b, concepts), batch)

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
        worker.close(kill=plan.outstanding > 0)  # answers still coming: nobody will read them


class _Plan:
    """Which batches the worker parses (asked in order, BATCHES_AHEAD outstanding) and which
    this process reads (`here`)."""

    def __init__(self, worker: CsvWorker, batches: list[list[Path]]) -> None:
        self.worker, self.batches = worker, batches
        self.here: set[int] = set(range(min(HEAD_START, len(batches))))
        self.next = 0  # first batch not yet assigned
        self.outstanding = 0
        self.take_one = False

    def assign(self) -> None:
        while self.next < len(self.batches) and self.outstanding < BATCHES_AHEAD:
            if self.next in self.here or self.take_one:
                self.here.add(self.next)
                self.take_one = False
            else:
                self.worker.ask(self.batches[self.next])
                self.outstanding += 1
            self.next += 1

    def receive(self) -> Any:
        """The next batch's outcome from the worker, as `ingest._read_csv_batch` gives it."""
        started = time.perf_counter()
        self.worker.wait_ready()
        answer = self.worker.receive()
        self.outstanding -= 1
        self.take_one = time.perf_counter() - started > WAITED_S
        return answer
