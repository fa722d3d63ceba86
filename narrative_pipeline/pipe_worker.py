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

A child writes its answers into a pipe of ~64 KiB: unless the parent reads them as they come,
the child stops at its first large answer until the parent next asks for one, and the two
processes take turns instead of overlapping. `PipeWorker(..., drain=True)` reads answers off the
pipe in a thread as soon as they are written (the caller bounds how many are outstanding).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
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

    def __init__(self, module: str, setup: Any, name: str, drain: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.ready = self.closed = False
        self.outstanding = 0  # requests sent, answers not yet received
        # Answers read off the pipe by the drain thread (then a _Cut when the pipe ends): at most
        # the answers outstanding, which the caller bounds.
        self.drained: queue.SimpleQueue[Any] | None = None
        if drain:
            self.drained = queue.SimpleQueue()
            threading.Thread(target=self._drain, name=f"{name}-drain", daemon=True).start()
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

    def has_answer(self) -> bool:
        """An answer (or the news that the child is gone) can be received without waiting:
        only known with `drain`; without it, False."""
        if self.drained is None:
            return False
        if not self.ready and not self.drained.empty():
            self.wait_ready()  # "ready" is not an answer
        return not self.drained.empty()

    def _load(self) -> Any:
        if self.drained is not None:
            answer = self.drained.get()
            if isinstance(answer, _Cut):
                self.drained.put(answer)  # every later receive fails the same way
                raise WorkerGone(f"{self.name} stopped (exit code {self.proc.poll()}): {answer}")
            return answer
        try:
            return pickle.load(self.proc.stdout)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - EOF, a cut pickle: the child is gone
            code = self.proc.poll()
            raise WorkerGone(f"{self.name} stopped (exit code {code}): {exc!r}") from exc

    def _drain(self) -> None:
        """In a thread: move each answer from the pipe to `drained` as soon as it is whole, until
        the pipe ends (the child stopped or was killed), then close it."""
        assert self.drained is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while True:
                self.drained.put(pickle.load(stdout))
        except Exception as exc:  # noqa: BLE001 - EOF, a cut pickle: the child is gone
            self.drained.put(_Cut(repr(exc)))
        finally:
            with contextlib.suppress(OSError):
                stdout.close()

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
        # With `drain`, the thread reading stdout closes it when the child's end closes.
        pipes = (
            [self.proc.stdin] if self.drained is not None else [self.proc.stdin, self.proc.stdout]
        )
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        threading.Thread(target=self.proc.wait, name=f"{self.name}-reaper", daemon=True).start()


class _Cut(str):
    """What the drain thread read last: the pipe ended or an answer was cut (why, as text)."""


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
