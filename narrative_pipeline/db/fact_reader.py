"""Reading facts for the store build: rows, fact_block blobs, and reader processes.

`read_fact_rows` turns fact rows into one numpy array; `read_facts` prefers a filing's
fact_block (SQLite, models.py) and reads rows only for filings without one.

Turning a SQLite row into Python objects holds the GIL for ~0.5 us, about five times what
SQLite itself spends on the row, so reading many rows is bound to one core whatever the
threads. `read_groups_in_helpers` has helper processes (`python -m
narrative_pipeline.db.fact_reader`, pipe_worker children importing only numpy and sqlite3,
or PyMySQL)
read groups of filings and send the arrays back (24 bytes a row through a pipe) while the
caller works on the current group. If a helper dies or answers with something that is not a
whole array, the remaining groups are read in the calling process: the caller always gets
every group, in order.

Protocol: the set-up message says which database ({"sqlite": path} or {"mysql": PyMySQL
connect arguments}); each request is a list of filing ids, answered with their rows as a
FACT_ROW_DTYPE array (or the exception the read raised). On MySQL the helpers spread
PyMySQL's row parsing (~4 us a row, pure Python) over the cores.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from narrative_pipeline.pipe_worker import PipeWorker, WorkerGone, child_main, requests, send

log = logging.getLogger(__name__)

FACT_ROW_DTYPE = np.dtype([("filing_id", "<i8"), ("pair_id", "<i8"), ("value", "<f8")])
IN_CHUNK = 500  # filing ids per IN (...) list
AHEAD_PER_HELPER = 2  # groups asked of each helper before its first answer is taken


def read_fact_rows(
    cur: Any, filing_ids: Sequence[int] | None, placeholder: str = "?"
) -> np.ndarray:
    """The (filing_id, pair_id, value) rows of `filing_ids` (None: every fact), as one
    FACT_ROW_DTYPE array. sqlite3 cursors iterate straight into numpy (no list of tuples)."""
    sql = "SELECT filing_id, concept_unit_id, value FROM fact"
    queries: list[tuple[str, tuple[int, ...]]]
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


class _Helper(PipeWorker):
    """One fact-reader child process over the database `source` describes (see `serve`)."""

    def __init__(self, source: dict) -> None:
        super().__init__("narrative_pipeline.db.fact_reader", source, "fact reader")

    def receive(self) -> Any:
        answer = super().receive()
        if not isinstance(answer, (np.ndarray, Exception)):
            raise WorkerGone(f"fact reader sent a {type(answer).__name__}, not rows")
        return answer


def read_groups_in_helpers(
    source: dict, groups: Iterable[tuple[Any, list[int]]], n_helpers: int, read_here: Any
) -> Iterator[tuple[Any, np.ndarray]]:
    """(key, rows of ids) for each (key, filing ids) of `groups`, in order, read round-robin
    by `n_helpers` processes over the database `source` describes ({"sqlite": path} or
    {"mysql": PyMySQL connect arguments}). `groups` is consumed lazily, at most
    AHEAD_PER_HELPER groups per helper ahead, so memory holds a few groups whatever the
    table size. `read_here(ids)` reads a group in this process: used from the first group a
    helper could not answer onwards."""
    helpers = [_Helper(source) for _ in range(n_helpers)]
    todo = iter(groups)
    pending: deque[tuple[Any, list[int], _Helper]] = deque()
    asked = 0
    try:
        while True:
            while len(pending) < AHEAD_PER_HELPER * n_helpers:
                item = next(todo, None)
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
    except WorkerGone as exc:
        log.warning("%s; reading the remaining fact groups in this process", exc)
        for helper in helpers:
            helper.proc.kill()
        for key, ids, _ in pending:
            yield key, read_here(ids)
        for key, ids in todo:
            yield key, read_here(ids)
    finally:
        for helper in helpers:
            helper.close()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer groups of filing ids until None or end of input."""
    source = pickle.load(inp)
    send(out, "ready")
    read = None
    for ids in requests(inp):
        try:
            read = read or _reader(source)
            rows: Any = read(ids)
        except Exception as exc:  # noqa: BLE001 - sent back, raised by the caller
            rows = RuntimeError(f"reading facts from {_describe(source)}: {exc}")
        send(out, rows)


def _reader(source: dict) -> Any:
    """ids -> rows over a connection opened for this helper: SQLite reads blocks where there
    are any; MySQL reads rows (PyMySQL, imported only here)."""
    if "sqlite" in source:
        cur = sqlite3.connect(source["sqlite"], timeout=60).cursor()
        cur.execute("PRAGMA query_only=1")
        return lambda ids: read_facts(cur, ids)
    import pymysql
    from pymysql.cursors import SSCursor

    cur = pymysql.connect(**source["mysql"]).cursor(SSCursor)  # rows streamed, not buffered
    return lambda ids: read_fact_rows(cur, ids, "%s")


def _describe(source: Any) -> str:
    """The database for an error message (never the password)."""
    if isinstance(source, dict) and "sqlite" in source:
        return str(source["sqlite"])
    if isinstance(source, dict) and isinstance(source.get("mysql"), dict):
        args = source["mysql"]
        return f"mysql://{args.get('host')}:{args.get('port')}/{args.get('database')}"
    return f"an unknown source of type {type(source).__name__}"


if __name__ == "__main__":
    child_main(serve)
