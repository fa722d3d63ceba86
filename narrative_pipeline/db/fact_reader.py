"""Fact rows read from a SQLite file by helper processes: `python -m narrative_pipeline.db.fact_reader`.

Turning a SQLite row into Python objects holds the GIL for ~0.6 µs, about five times what
SQLite itself spends on the row, so the store build's read-back of the whole fact table was
bound to one core whatever the threads. Helper processes each read a ticker group's rows into
a numpy array and send it back (24 bytes a row through a pipe, a few ms per 250k rows), so
the rows of the next groups are converted on other cores while the caller works on the
current one.

A helper is a plain child process speaking pickles over its stdin/stdout (as the CSV worker
does, for the same reasons: no re-import of the caller's main module, no fork of a process
with threads). It imports only numpy and sqlite3 (~0.1 s). If a helper dies or answers with
something that is not a whole array, its groups are read in the calling process: the caller
always gets every group, in order.

Protocol: the parent sends the database file's path; the helper answers "ready"; then for
each list of filing ids it sends back the rows of those filings as a FACT_ROW_DTYPE array in
primary-key order, or the exception the read raised. None or end of input stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger(__name__)

FACT_ROW_DTYPE = np.dtype([("filing_id", "<i8"), ("pair_id", "<i8"), ("value", "<f8")])
IN_CHUNK = 500  # filing ids per IN (...) list
AHEAD_PER_HELPER = 2  # groups asked of each helper before its first answer is taken
ENV_PROCESSES = "NARRATIVE_INGEST_PROCESSES"


def processes_enabled() -> bool:
    """Helper processes are used unless NARRATIVE_INGEST_PROCESSES turns them off."""
    setting = os.environ.get(ENV_PROCESSES, "1").strip().lower()
    return setting not in ("0", "false", "no", "off")


def read_fact_rows(
    cur: Any, filing_ids: Sequence[int] | None, placeholder: str = "?"
) -> np.ndarray:
    """The (filing_id, pair_id, value) rows of `filing_ids` (None: every fact), as one
    FACT_ROW_DTYPE array. sqlite3 cursors iterate straight into numpy (no list of tuples)."""
    sql = "SELECT filing_id, concept_unit_id, value FROM fact"
    if filing_ids is None:
        queries = [(sql, ())]
    else:
        ids = list(filing_ids)
        queries = [
            (f"{sql} WHERE filing_id IN ({','.join([placeholder] * len(chunk))})", chunk)
            for chunk in (tuple(ids[k : k + IN_CHUNK]) for k in range(0, len(ids), IN_CHUNK))
        ]
    parts = []
    for query, params in queries:
        cur.execute(query, params)
        rows = cur if isinstance(cur, sqlite3.Cursor) else _as_tuples(cur)
        parts.append(np.fromiter(rows, dtype=FACT_ROW_DTYPE))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=FACT_ROW_DTYPE)


def pack_blocks(fid: np.ndarray, cid: np.ndarray, values: np.ndarray) -> list[tuple]:
    """fact_block rows (filing_id, n, pair_ids, values) of facts sorted by (fid, cid)."""
    if not len(fid):
        return []
    starts = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    ends = np.r_[starts[1:], len(fid)]
    pair_bytes = np.ascontiguousarray(cid, dtype="<i8").tobytes()
    value_bytes = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return [
        (f, e - s, pair_bytes[8 * s : 8 * e], value_bytes[8 * s : 8 * e])
        for f, s, e in zip(fid[starts].tolist(), starts.tolist(), ends.tolist(), strict=True)
    ]


def read_facts(cur: Any, filing_ids: Sequence[int]) -> np.ndarray:
    """`read_fact_rows` of `filing_ids` on SQLite, from their fact_block where they have one
    (one blob pair per filing instead of a row per fact), else from the rows. Rows come
    grouped by filing, not in primary-key order."""
    blocks, missing = read_blocks(cur, filing_ids)
    if not missing:
        return blocks
    return np.concatenate([blocks, read_fact_rows(cur, missing)])


def read_blocks(cur: Any, filing_ids: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    """The rows of the filings that have a whole fact_block, and the ids of the others."""
    ids = list(filing_ids)
    fids, counts, pairs, values = [], [], [], []
    for chunk in (tuple(ids[k : k + IN_CHUNK]) for k in range(0, len(ids), IN_CHUNK)):
        cur.execute(
            'SELECT filing_id, n, pair_ids, "values" FROM fact_block '
            f"WHERE filing_id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        for fid, n, pair_ids, vals in cur:
            if len(pair_ids) == len(vals) == 8 * n:  # else: read its rows
                fids.append(fid)
                counts.append(n)
                pairs.append(pair_ids)
                values.append(vals)
    rows = np.empty(sum(counts), dtype=FACT_ROW_DTYPE)
    rows["filing_id"] = np.repeat(np.array(fids, dtype=np.int64), counts)
    rows["pair_id"] = np.frombuffer(b"".join(pairs), dtype="<i8")
    rows["value"] = np.frombuffer(b"".join(values), dtype="<f8")
    have = set(fids)
    return rows, [i for i in ids if i not in have]


def _as_tuples(cur: Any) -> Iterator[tuple]:
    """Cursor rows as tuples (numpy record fromiter needs tuples; pymysql may give lists)."""
    for row in cur:
        yield row if isinstance(row, tuple) else tuple(row)


class HelperGone(Exception):
    """A helper process died or sent something that is not a whole answer."""


class _Helper:
    """One reader child process; its answers come back in the order it was asked."""

    def __init__(self, path: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "narrative_pipeline.db.fact_reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.ready = self.closed = False
        self.outstanding = 0
        self.send(path)

    def send(self, obj: Any) -> None:
        try:
            pickle.dump(obj, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError) as exc:
            raise HelperGone(f"cannot send to the fact reader: {exc}") from exc

    def receive(self) -> Any:
        try:
            if not self.ready:
                if pickle.load(self.proc.stdout) != "ready":  # type: ignore[arg-type]
                    raise HelperGone("fact reader did not start as expected")
                self.ready = True
            answer = pickle.load(self.proc.stdout)  # type: ignore[arg-type]
        except HelperGone:
            raise
        except Exception as exc:  # noqa: BLE001 - EOF, a cut pickle: the helper is gone
            raise HelperGone(
                f"fact reader stopped (exit code {self.proc.poll()}): {exc!r}"
            ) from exc
        self.outstanding -= 1
        if not isinstance(answer, (np.ndarray, Exception)):
            raise HelperGone(f"fact reader sent a {type(answer).__name__}, not rows")
        return answer

    def ask(self, filing_ids: list[int]) -> None:
        self.send(filing_ids)
        self.outstanding += 1

    def close(self) -> None:
        """Stop the helper (killed if answers are still coming); safe to call twice. Its exit
        is awaited in a daemon thread, not by the caller."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.outstanding:
                raise HelperGone("answers still coming")
            self.send(None)
        except HelperGone:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        threading.Thread(target=self.proc.wait, name="fact-reader-reaper", daemon=True).start()


def read_groups_in_helpers(
    path: str, groups: Iterable[tuple[Any, list[int]]], n_helpers: int, read_here: Any
) -> Iterator[tuple[Any, np.ndarray]]:
    """(key, rows of ids) for each (key, filing ids) of `groups`, in order, read round-robin
    by `n_helpers` processes over the SQLite file `path`. `groups` is consumed lazily, at
    most AHEAD_PER_HELPER groups per helper ahead, so memory holds a few groups whatever the
    table size. `read_here(ids)` reads a group in this process: used from the first group a
    helper could not answer onwards."""
    helpers = [_Helper(path) for _ in range(n_helpers)]
    source = iter(groups)
    pending: deque[tuple[Any, list[int], _Helper]] = deque()
    asked = 0
    try:
        while True:
            while len(pending) < AHEAD_PER_HELPER * n_helpers:
                item = next(source, None)
                if item is None:
                    break
                helper = helpers[asked % n_helpers]  # answers come back per helper in order
                pending.append((item[0], item[1], helper))  # before asking: read here if it fails
                asked += 1
                helper.ask(item[1])
            if not pending:
                return
            key, _, helper = pending[0]
            answer = helper.receive()
            pending.popleft()
            if isinstance(answer, Exception):
                raise answer
            yield key, answer
    except HelperGone as exc:
        log.warning("%s; reading the remaining fact groups in this process", exc)
        for helper in helpers:
            helper.proc.kill()
        for key, ids, _ in pending:
            yield key, read_here(ids)
        for key, ids in source:
            yield key, read_here(ids)
    finally:
        for helper in helpers:
            helper.close()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer groups of filing ids until None or end of input."""
    path = pickle.load(inp)
    _send(out, "ready")
    cur = None
    while True:
        try:
            ids = pickle.load(inp)
        except EOFError:
            return
        if ids is None:
            return
        try:
            cur = cur or _open_read_only(path)
            rows: Any = read_facts(cur, ids)
        except Exception as exc:  # noqa: BLE001 - sent back, raised by the caller
            rows = RuntimeError(f"reading facts from {path}: {exc}")
        _send(out, rows)


def _open_read_only(path: str) -> sqlite3.Cursor:
    cur = sqlite3.connect(path, timeout=60).cursor()
    cur.execute("PRAGMA query_only=1")
    return cur


def _send(out: BinaryIO, obj: Any) -> None:
    out.write(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()


def main() -> None:
    """Keep fd 1 for the protocol; anything else printed goes to stderr."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
