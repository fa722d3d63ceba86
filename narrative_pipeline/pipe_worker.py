"""Helper child processes that exchange pickles over their stdin/stdout.

Used by the CSV worker (readers/csv_worker.py, driven by us_gaap/csv_process.py) and the fact
readers (db/fact_reader.py): work that holds the GIL (parsing, turning SQLite rows into
numbers) runs on another core. A plain child process, not multiprocessing: 'spawn' re-imports
the caller's main module (an unguarded script would ingest again in the child) and 'fork' is
unsafe with the caller's threads. The child is `python -m MODULE` and imports only what that
module needs.

The parent sends a first message (the child's set-up), the child answers "ready", then one
answer per request in order; None or end of input stops the child. Any failure to talk to the
child (it died, an answer was cut) raises WorkerGone, so callers can do the work themselves.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

ENV_PROCESSES = "NARRATIVE_INGEST_PROCESSES"


def processes_enabled() -> bool:
    """Helper processes are used unless NARRATIVE_INGEST_PROCESSES turns them off (0/false/
    no/off): the work is then done in the calling process."""
    setting = os.environ.get(ENV_PROCESSES, "1").strip().lower()
    return setting not in ("0", "false", "no", "off")


class WorkerGone(Exception):
    """The child process died or sent something that is not a whole answer."""


class PipeWorker:
    """One child process; its answers come back in the order it was asked."""

    def __init__(self, module: str, setup: Any, name: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.ready = self.closed = False
        self.outstanding = 0  # requests sent, answers not yet received
        self.send(setup)

    def send(self, obj: Any) -> None:
        stdin = self.proc.stdin
        assert stdin is not None  # Popen(stdin=PIPE)
        try:
            pickle.dump(obj, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except (OSError, ValueError) as exc:
            raise WorkerGone(f"cannot send to the {self.name}: {exc}") from exc

    def ask(self, request: Any) -> None:
        self.send(request)
        self.outstanding += 1

    def wait_ready(self) -> None:
        """The child's first answer says it started (raises WorkerGone if it did not)."""
        if not self.ready:
            if self._load() != "ready":
                raise WorkerGone(f"{self.name} did not start as expected")
            self.ready = True

    def receive(self) -> Any:
        """The answer to the oldest request still outstanding."""
        self.wait_ready()
        answer = self._load()
        self.outstanding -= 1
        return answer

    def _load(self) -> Any:
        try:
            return pickle.load(self.proc.stdout)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - EOF, a cut pickle: the child is gone
            code = self.proc.poll()
            raise WorkerGone(f"{self.name} stopped (exit code {code}): {exc!r}") from exc

    def close(self, kill: bool = False) -> None:
        """Stop the child (at once with `kill`, or when answers are still coming: nobody will
        read them); safe to call twice. Its exit is awaited in a daemon thread."""
        if self.closed:
            return
        self.closed = True
        try:
            if kill or self.outstanding:
                raise WorkerGone("stopped")
            self.send(None)
        except WorkerGone:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        threading.Thread(target=self.proc.wait, name=f"{self.name}-reaper", daemon=True).start()


# ------------------------------------------------------------------ in the child


def send(out: BinaryIO, obj: Any) -> None:
    """One pickle; an exception that cannot be pickled goes as a RuntimeError with its text
    (callers report str(exception), which stays the same)."""
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001
        if not isinstance(obj, BaseException):
            raise
        data = pickle.dumps(RuntimeError(str(obj)), protocol=pickle.HIGHEST_PROTOCOL)
    out.write(data)
    out.flush()


def requests(inp: BinaryIO) -> Any:
    """The requests after the set-up message, until None or end of input."""
    while True:
        try:
            request = pickle.load(inp)
        except EOFError:
            return
        if request is None:
            return
        yield request


def child_main(serve: Callable[[BinaryIO, BinaryIO], None]) -> None:
    """Run `serve(stdin, protocol output)`, keeping fd 1 for the protocol: anything else the
    child prints goes to stderr."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, out)
