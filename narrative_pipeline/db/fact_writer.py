"""The one fact write path: `FactWriter.replace_fact_columns` replaces every filing and fact
of the tickers in a batch, in one transaction, and records their source files with them.

Owns: checks that refuse a ticker before any write (facts without a filing, non-finite
values, repeated (accn, concept, unit), unnamed concepts or units, bad names), the retry of a
failed batch ticker by ticker, deleting tickers, the concept_unit id cache, each written
ticker's content stamp (`ticker_version`, read by db/ticker_state.py), and the bulk
inserts (multi-row INSERTs on SQLite with their fact_block, LOAD DATA LOCAL INFILE on
MySQL/MariaDB when the server allows it). Which sources hold which filings, and the rules
against silent shrinks, are db/sources.py's.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from xxhash import xxh3_64

from narrative_pipeline.db import fact_reader, source_files, sources
from narrative_pipeline.db.engine import Backend, chunks
from narrative_pipeline.db.protocol import FactBatch
from narrative_pipeline.db.source_files import SourceFileState

log = logging.getLogger(__name__)
LOAD_DATA_MIN_ROWS = 2000  # below this, one multi-row INSERT is as fast as a temp file
LOCAL_INFILE_REFUSED = {1148, 2068, 3948, 1229}  # server/client has local_infile disabled
# SQLite: rows per multi-row INSERT (600 parameters, under every SQLite's limit of 999);
# ~2x the rows/s of one-row statements, measured with sqlite 3.40.
SQLITE_ROWS_PER_INSERT = 200
DENSE_PAIR_CODES = 1 << 24  # concept x unit code space numbered with a mask instead of a sort

ColumnPairs = tuple[np.ndarray, list[tuple[str, str]]]
Outcomes = list[int | Exception]


class FactWriter:
    """Writes facts into one database (keeps the concept_unit ids it has seen)."""

    def __init__(self, backend: Backend) -> None:
        self._db = backend
        self._pair_ids: dict[tuple[str, str], int] = {}
        self.load_data_ok = True  # False once the server refused LOAD DATA LOCAL INFILE
        # ids inserted in a failed transaction do not exist
        backend.rollback_hooks.append(self._pair_ids.clear)

    def replace_fact_columns(
        self,
        columns: FactBatch,
        source_files: Sequence[SourceFileState | None] | None = None,
        *,
        allow_shrink: bool = False,
        notes: list[sources.SourceNote] | None = None,
        _check_repeats: bool = False,
    ) -> Outcomes:
        """Replace every filing and fact of each ticker in `columns` (a readers FactColumns),
        all in one transaction; `source_files[t]`, when given, is recorded with ticker t.

        Returns per ticker the facts written or the exception that kept it out. Tickers whose
        facts the schema would reject are refused before the transaction; if the transaction
        fails anyway, every ticker is retried alone (replace semantics and atomicity per
        ticker). Repeated (accn, concept, unit) facts are looked for in the primary-key sort
        the write does anyway; when there are some, the write is rolled back and the batch
        checked ticker by ticker (`_check_repeats`).

        Sources (db/sources.py): a ticker whose write would drop filings its source file
        supplied before is refused (SourceShrinkRefused) unless `allow_shrink`; filings other
        sources hold are kept (shared ones merged); `notes` receives what was shared and how
        many values conflicted.
        """
        n = len(columns.tickers)
        files: list[SourceFileState | None] = (
            list(source_files) if source_files is not None else [None] * n
        )
        if len(set(columns.tickers)) != n:
            raise ValueError("replace_fact_columns: a ticker appears twice in one batch")
        options: dict[str, Any] = {"allow_shrink": allow_shrink, "notes": notes}
        unnamed = _tickers_with_unnamed_facts(columns)
        if unnamed:
            return self._write_without(columns, files, unnamed, options)
        pairs = _column_pairs(columns)
        outcomes: Outcomes = list(_check_columns(columns, pairs, _check_repeats))
        for t, problem in sources.name_problems(columns.tickers, columns.filings).items():
            outcomes[t] = ValueError(f"{columns.sources[t]}: not written: {problem}")
        ok = [t for t in range(n) if not isinstance(outcomes[t], Exception)]
        if not ok:
            return outcomes
        batch = columns if len(ok) == n else columns.select(ok)
        batch_files = [files[t] for t in ok]
        try:
            counts = self._write_columns(
                batch, batch_files, pairs if batch is columns else None, **options
            )
        except _Refused as refused:  # rolled back: write the others without the refused
            for k, exc in refused.by_position.items():
                t = ok[k]
                # A fact problem (repeats) explains a refusal better than the shrink it causes.
                check = _check_columns(columns.select([t]), None, repeats=True)[0]
                outcomes[t] = check if isinstance(check, Exception) else exc
            return self._write_without(columns, files, {}, options, outcomes)
        except _RepeatedFacts:
            if _check_repeats:  # the full check already removed every repeating ticker
                raise
            # Rolled back: find the tickers with repeats and refuse just those.
            return self.replace_fact_columns(columns, source_files, **options, _check_repeats=True)
        except Exception as exc:  # noqa: BLE001 - retry one ticker at a time
            if len(ok) == 1:
                outcomes[ok[0]] = exc
                return outcomes
            log.warning("batch of %d tickers failed (%s); retrying one by one", len(ok), exc)
            for k, t in enumerate(ok):
                outcomes[t] = self._write_alone(batch.select([k]), batch_files[k], options)
            return outcomes
        for k, t in enumerate(ok):
            outcomes[t] = int(counts[k])
        return outcomes

    def _write_alone(
        self, one: FactBatch, file: SourceFileState | None, options: dict[str, Any]
    ) -> int | Exception:
        """One ticker in its own transaction: its facts written, or what kept them out."""
        try:
            return int(self._write_columns(one, [file], **options)[0])
        except _Refused as refused:
            return refused.by_position[0]
        except Exception as exc:  # noqa: BLE001 - reported per ticker
            return exc

    def _write_without(
        self,
        columns: FactBatch,
        files: list[SourceFileState | None],
        refused: dict[int, Exception],
        options: dict[str, Any],
        outcomes: Outcomes | None = None,
    ) -> Outcomes:
        """`replace_fact_columns` of every ticker but the `refused` ones (their outcome is
        their refusal) and those `outcomes` already holds an exception for."""
        outcomes = list(outcomes) if outcomes is not None else [0] * len(columns.tickers)
        for t, exc in refused.items():
            outcomes[t] = exc
        rest = [t for t, outcome in enumerate(outcomes) if not isinstance(outcome, Exception)]
        if rest:
            written = self.replace_fact_columns(
                columns.select(rest), [files[t] for t in rest], **options
            )
            for t, outcome in zip(rest, written, strict=True):
                outcomes[t] = outcome
        return outcomes

    def _write_columns(
        self,
        columns: FactBatch,
        files: list[SourceFileState | None],
        column_pairs: ColumnPairs | None = None,
        *,
        allow_shrink: bool = False,
        notes: list[sources.SourceNote] | None = None,
    ) -> np.ndarray:
        """One transaction: check each ticker's sources (db/sources.py), write the tickers
        whose stored filings are their source's alone whole, merge the others, record files."""
        keys = [
            sources.source_key(state.path if state is not None else source)
            for state, source in zip(files, columns.sources, strict=True)
        ]
        new_notes: list[sources.SourceNote] = []
        with self._db.transaction(writes_facts=True) as cur:
            plans = sources.plan_writes(
                cur,
                self._db.ph,
                columns.tickers,
                keys,
                [{r[0] for r in f} for f in columns.filings],
            )
            refused = sources.refusals(plans, columns.sources, allow_shrink)
            if refused:
                raise _Refused(refused)
            whole = [t for t, plan in enumerate(plans) if plan.whole]
            stamps: dict[str, int] = {}  # content stamps of the tickers written whole
            if len(whole) == len(plans):
                self._write_whole(cur, columns, column_pairs, keys, stamps)
            else:
                if whole:
                    batch = columns.select(whole)
                    self._write_whole(cur, batch, None, [keys[t] for t in whole], stamps)
                for t, plan in enumerate(plans):
                    if not plan.whole:
                        note = self._write_shared(cur, columns.select([t]), keys[t], plan)
                        new_notes += [note] if note else []
            stamp_tickers(cur, self._db.ph, columns.tickers, stamps)
            for state in files:
                if state is not None:
                    source_files.record(cur, self._db.ph, state)
        if notes is not None:
            notes.extend(new_notes)
        return columns.fact_counts()

    def _write_shared(
        self, cur: Any, one: FactBatch, key: str, plan: sources.TickerPlan
    ) -> sources.SourceNote | None:
        """One ticker (FactColumns of one) that shares filings with another source."""
        pair_index, pairs = _column_pairs(one)
        pair_ids = self._ensure_pairs(cur, pairs)[pair_index]
        return sources.write_shared(
            cur,
            self._db.ph,
            self._db.is_sqlite,
            one.tickers[0],
            key,
            one.filings[0],
            one.filing_index,
            pair_ids,
            one.values,
            plan,
        )

    def _write_whole(
        self,
        cur: Any,
        columns: FactBatch,
        column_pairs: ColumnPairs | None,
        keys: list[str],
        stamps: dict[str, int],
    ) -> None:
        """Delete the tickers, insert their filings, facts and filing sources; `stamps`
        receives each ticker's content stamp (`content_stamps`)."""
        p = self._db.ph
        pair_index, pairs = column_pairs or _column_pairs(columns)
        filing_rows = [
            sources.filing_row(ticker, filing)
            for ticker, filings in zip(columns.tickers, columns.filings, strict=True)
            for filing in filings
        ]
        offsets = np.cumsum([0] + [len(f) for f in columns.filings])
        self.delete_tickers(cur, columns.tickers)
        if filing_rows:
            cur.executemany(sources.filing_insert(p), filing_rows)
        id_of = self._filing_ids(cur, columns.tickers)
        filing_ids = np.array([id_of[(r[0], r[1])] for r in filing_rows], dtype=np.int64)
        if len(columns.values):
            pair_ids = self._ensure_pairs(cur, pairs)
            fid = filing_ids[offsets[columns.ticker_index] + columns.filing_index]
            cid = pair_ids[pair_index]
            key = (fid << 32) | cid
            order = np.argsort(key)  # primary-key order: b-tree appends
            if np.any(np.diff(key[order]) == 0):
                raise _RepeatedFacts
            self._insert_facts(cur, fid[order], cid[order], columns.values[order])
            stamps.update(content_stamps(columns, order, cid))
        else:
            stamps.update(content_stamps(columns, np.zeros(0, np.int64), np.zeros(0, np.int64)))
        sources.record_whole(cur, p, columns.tickers, keys, columns.filings)

    def _filing_ids(self, cur: Any, tickers: Sequence[str]) -> dict[tuple[str, str], int]:
        p = self._db.ph
        id_of: dict[tuple[str, str], int] = {}
        for chunk in chunks(list(tickers)):
            cur.execute(
                f"SELECT ticker, accn, id FROM filing WHERE ticker IN ({','.join([p] * len(chunk))})",
                tuple(chunk),
            )
            for ticker, accn, filing_id in cur.fetchall():
                id_of[(ticker, accn)] = filing_id
        return id_of

    def delete_tickers(self, cur: Any, tickers: Sequence[str]) -> None:
        """Facts by explicit filing ids (MariaDB runs `DELETE ... IN (SELECT ...)` as a scan of
        the whole fact table), then the filings: a few IN (...) statements for many tickers."""
        p = self._db.ph
        ids: list[int] = []
        for chunk in chunks(list(tickers)):
            cur.execute(
                f"SELECT id FROM filing WHERE ticker IN ({','.join([p] * len(chunk))})",
                tuple(chunk),
            )
            ids += [row[0] for row in cur.fetchall()]
        for chunk in chunks(list(tickers)):
            marks = ",".join([p] * len(chunk))
            cur.execute(f"DELETE FROM filing_source WHERE ticker IN ({marks})", tuple(chunk))
            cur.execute(f"DELETE FROM ticker_version WHERE ticker IN ({marks})", tuple(chunk))
        tables = ("fact", "fact_block") if self._db.is_sqlite else ("fact",)
        for chunk in chunks(ids):
            for table in tables:
                cur.execute(
                    f"DELETE FROM {table} WHERE filing_id IN ({','.join([p] * len(chunk))})",
                    chunk,
                )
        if ids:
            for chunk in chunks(list(tickers)):
                cur.execute(
                    f"DELETE FROM filing WHERE ticker IN ({','.join([p] * len(chunk))})",
                    tuple(chunk),
                )

    def _insert_facts(self, cur: Any, fid: np.ndarray, cid: np.ndarray, values: np.ndarray) -> None:
        """Bulk insert: executemany over plain tuples (pymysql turns it into multi-row INSERTs
        of up to ~1 MB; sqlite3 steps one prepared statement)."""
        if self._db.is_mysql and len(fid) >= LOAD_DATA_MIN_ROWS and self.load_data_ok:
            try:
                _load_data_local(cur, fid, cid, values)
                return
            except Exception as exc:  # noqa: BLE001 - server refuses LOCAL INFILE: fall back
                if getattr(exc, "args", (None,))[0] not in LOCAL_INFILE_REFUSED:
                    raise
                log.info("LOAD DATA LOCAL INFILE refused (%s); using multi-row INSERTs", exc)
                self.load_data_ok = False
        p = self._db.ph
        head = 0
        if self._db.is_sqlite and len(fid) >= SQLITE_ROWS_PER_INSERT:
            head = _insert_multi_row(cur, fid, cid, values)
        cur.executemany(
            f"INSERT INTO fact (filing_id, concept_unit_id, value) VALUES ({p},{p},{p})",
            zip(fid[head:].tolist(), cid[head:].tolist(), values[head:].tolist(), strict=True),
        )
        if self._db.is_sqlite:
            cur.executemany(
                'INSERT INTO fact_block (filing_id, n, pair_ids, "values") VALUES (?,?,?,?)',
                fact_reader.pack_blocks(fid, cid, values),
            )

    def _ensure_pairs(self, cur: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
        """concept_unit ids for `pairs` (inserted when new), aligned with `pairs`."""
        missing = [pair for pair in pairs if pair not in self._pair_ids]
        if missing:
            p = self._db.ph
            cur.executemany(
                f"{self._db.insert_ignore} INTO concept_unit (concept, unit) VALUES ({p},{p})",
                missing,
            )
            wanted = set(missing)
            concepts = sorted({c for c, _ in missing})
            for chunk in chunks(concepts):
                cur.execute(
                    "SELECT concept, unit, id FROM concept_unit WHERE concept IN "
                    f"({','.join([p] * len(chunk))})",
                    tuple(chunk),
                )
                for concept, unit, pair_id in cur.fetchall():
                    if (concept, unit) in wanted:
                        self._pair_ids[(concept, unit)] = pair_id
        return np.array([self._pair_ids[pair] for pair in pairs], dtype=np.int64)


def content_stamps(columns: FactBatch, order: np.ndarray, pair_ids: np.ndarray) -> dict[str, int]:
    """Per ticker, a 62-bit hash of what it stores: its filing rows, then its facts as
    (position of the filing in its list, concept_unit id, value) in `order` (the write's
    primary-key order, which follows each ticker's filing list). The same content gives the
    same stamp whatever filing ids the database hands out."""
    tickers = columns.ticker_index[order]
    by_ticker = order[np.argsort(tickers, kind="stable")]
    bounds = np.searchsorted(columns.ticker_index[by_ticker], np.arange(len(columns.tickers) + 1))
    filing_index = columns.filing_index[by_ticker].astype("<i8")
    pairs = pair_ids[by_ticker].astype("<i8")
    values = columns.values[by_ticker].astype("<f8")
    out = {}
    for t, ticker in enumerate(columns.tickers):
        lo, hi = int(bounds[t]), int(bounds[t + 1])
        digest = xxh3_64(repr(columns.filings[t]).encode())
        for part in (filing_index[lo:hi], pairs[lo:hi], values[lo:hi]):
            digest.update(part.tobytes())
        out[ticker] = digest.intdigest() >> 2
    return out


def stamp_tickers(
    cur: Any, ph: str, tickers: Sequence[str], stamps: Mapping[str, int] | None = None
) -> None:
    """Each written ticker's `ticker_version` stamp (models.py says why): its content stamp
    when known, else a random one (a merged write: always seen as a change)."""
    stamps = stamps or {}
    for chunk in chunks(list(tickers)):
        cur.execute(
            f"DELETE FROM ticker_version WHERE ticker IN ({','.join([ph] * len(chunk))})",
            tuple(chunk),
        )
    cur.executemany(
        f"INSERT INTO ticker_version (ticker, stamp) VALUES ({ph},{ph})",
        [(ticker, stamps.get(ticker, secrets.randbits(62))) for ticker in tickers],
    )


def _load_data_local(cur: Any, fid: np.ndarray, cid: np.ndarray, values: np.ndarray) -> None:
    """MySQL/MariaDB bulk path: the rows as a CSV temp file (written by Arrow, shortest
    round-trip float text) loaded with LOAD DATA LOCAL INFILE."""
    table = pa.table({"f": fid, "c": cid, "v": values})
    fd, name = tempfile.mkstemp(suffix=".csv", prefix="narrative_facts_")
    os.close(fd)
    try:
        pacsv.write_csv(table, name, pacsv.WriteOptions(include_header=False))
        cur.execute(
            f"LOAD DATA LOCAL INFILE '{name}' INTO TABLE fact FIELDS TERMINATED BY ',' "
            "LINES TERMINATED BY '\\n' (filing_id, concept_unit_id, value)"
        )
    finally:
        os.unlink(name)


def _column_pairs(columns: FactBatch) -> ColumnPairs:
    """Per fact, its index into the distinct (concept, unit) pairs, and those pairs; names
    repeated in the batch's concept/unit lists map to one pair."""
    concept_ids, concepts = pd.factorize(pd.Index(columns.concepts, dtype=object))
    unit_ids, units = pd.factorize(pd.Index(columns.units, dtype=object))
    c = concept_ids[columns.concept_code].astype(np.int64)
    u = unit_ids[columns.unit_code].astype(np.int64)
    n_u = max(1, len(units))
    combined = c * n_u + u
    if len(concepts) * n_u <= DENSE_PAIR_CODES:  # no sort: mark the codes used, number them
        used = np.zeros(len(concepts) * n_u, dtype=bool)
        used[combined] = True
        uniq = np.flatnonzero(used)
        inverse = (np.cumsum(used) - 1)[combined]
    else:
        uniq, inverse = np.unique(combined, return_inverse=True)
    concept_names, unit_names = concepts.tolist(), units.tolist()  # not Index[k] per pair
    pairs = [(str(concept_names[k // n_u]), str(unit_names[k % n_u])) for k in uniq.tolist()]
    return inverse.reshape(-1), pairs


def _tickers_with_unnamed_facts(columns: FactBatch) -> dict[int, Exception]:
    """Position -> ValueError for tickers with facts whose concept or unit is empty."""
    bad = (columns.concept_code < 0) | (columns.unit_code < 0)
    if not bad.any():
        return {}
    return {
        int(t): ValueError(
            f"{columns.sources[t]}: facts not written: facts with an empty concept or unit"
        )
        for t in np.unique(columns.ticker_index[bad])
    }


class _Refused(Exception):
    """Tickers of a write refused by the source rules (position in the batch -> reason)."""

    def __init__(self, by_position: Mapping[int, Exception]) -> None:
        super().__init__(f"{len(by_position)} tickers refused")
        self.by_position = by_position


class _RepeatedFacts(Exception):
    """A batch holds repeated (filing, pair) facts (found while sorting it for the insert)."""


def _check_columns(
    columns: FactBatch, column_pairs: ColumnPairs | None, repeats: bool = True
) -> Outcomes:
    """Per ticker: 0, or a ValueError for facts the schema would reject (no filing, a
    non-finite value, and with `repeats` a repeated (accn, concept, unit)), found before any
    write."""
    n = len(columns.tickers)
    out: Outcomes = [0] * n
    if not len(columns.values):
        return out
    n_filings = np.array([len(f) for f in columns.filings], dtype=np.int64)
    t = columns.ticker_index
    bad_filing = (columns.filing_index < 0) | (columns.filing_index >= n_filings[t])
    bad_value = ~np.isfinite(columns.values)
    pair_index, pairs = column_pairs or _column_pairs(columns)
    offsets = np.cumsum(np.concatenate([[0], n_filings]))
    repeated = np.zeros(len(t), dtype=bool)
    if repeats:
        key = (offsets[t] + np.clip(columns.filing_index, 0, None)) * max(1, len(pairs))
        key += pair_index
        sorted_key = np.sort(key)
        repeated_keys = sorted_key[1:][sorted_key[1:] == sorted_key[:-1]]
        repeated = np.isin(key, repeated_keys)
    for name, mask in (
        ("facts without an accn", bad_filing),
        ("non-finite values", bad_value),
        ("facts in repeated (accn, concept, unit) groups", repeated),
    ):
        if mask.any():
            for ticker, count in zip(*np.unique(t[mask], return_counts=True), strict=True):
                previous = out[ticker]
                text = f"{int(count)} {name}"
                if isinstance(previous, ValueError):
                    text = f"{previous.args[0]}; {text}"
                else:
                    text = f"{columns.sources[ticker]}: facts not written: {text}"
                out[ticker] = ValueError(text)
    return out


def _insert_multi_row(cur: Any, fid: np.ndarray, cid: np.ndarray, values: np.ndarray) -> int:
    """Insert the first rows (a multiple of SQLITE_ROWS_PER_INSERT) with multi-row INSERTs;
    returns how many were inserted (the caller inserts the rest)."""
    rows = SQLITE_ROWS_PER_INSERT
    n = len(fid) // rows * rows
    flat = np.empty(3 * n, dtype=object)
    flat[0::3], flat[1::3], flat[2::3] = fid[:n].tolist(), cid[:n].tolist(), values[:n].tolist()
    statement = "INSERT INTO fact (filing_id, concept_unit_id, value) VALUES " + ",".join(
        ["(?,?,?)"] * rows
    )
    cur.executemany(statement, (flat[i : i + 3 * rows] for i in range(0, 3 * n, 3 * rows)))
    return n
