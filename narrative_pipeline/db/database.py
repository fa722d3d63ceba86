"""DbUsGaap: the US-GAAP taxonomy and the raw filings/facts, on SQLite or MySQL/MariaDB.

One code path for both back ends (SQLAlchemy for the schema and small queries; the raw DBAPI
cursor for bulk rows, because building a dict or an ORM object per fact would cost more than
the database itself). Writes of one ticker happen in one transaction, so a failure leaves the
previous data of that ticker intact. Which file holds which filing, and the rules that keep a
write from dropping stored filings, are in db/sources.py.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import URL, Engine, make_url

from narrative_pipeline.db import (
    FILING_COLUMNS,
    TAXONOMY_COLUMNS,
    fact_reader,
    migrations,
    models,
    sources,
)
from narrative_pipeline.db.fact_reader import FACT_ROW_DTYPE
from narrative_pipeline.db.fingerprint import file_fingerprint
from narrative_pipeline.db.schema import create_schema
from narrative_pipeline.pipe_worker import processes_enabled

log = logging.getLogger(__name__)
LOAD_DATA_MIN_ROWS = 2000  # below this, one multi-row INSERT is as fast as a temp file
LOCAL_INFILE_REFUSED = {1148, 2068, 3948, 1229}  # server/client has local_infile disabled
# SQLite: rows per multi-row INSERT (600 parameters, under every SQLite's limit of 999);
# ~2x the rows/s of one-row statements, measured with sqlite 3.40.
SQLITE_ROWS_PER_INSERT = 200
DENSE_PAIR_CODES = 1 << 24  # concept x unit code space numbered with a mask instead of a sort
IN_CHUNK = 500  # parameters per IN (...) list, well under every back end's limit
FACT_GROUP_ROWS = 262_144  # facts per group streamed by iter_fact_codes
READ_HELPERS = 2  # processes reading fact rows for iter_fact_codes (with 2+ cores)
HELPER_MIN_ROW_FACTS = 500_000  # facts to read row by row before helper processes pay


@dataclass(frozen=True)
class SourceFileState:
    """What the database remembers of a loaded source file (for incremental ingestion)."""

    path: str
    ticker: str | None
    size: int
    mtime: float
    sha: str
    loaded_at: datetime | None = None


@dataclass
class FactCodes:
    """Facts as positions into per-filing and per-pair string tables (see `fact_codes`)."""

    filing_ticker: pa.Array  # large_string, one per filing
    filing_accn: pa.Array
    pair_concept: pa.Array  # large_string, one per concept_unit row
    pair_unit: pa.Array
    filing_pos: np.ndarray  # per fact: index into the filing tables
    pair_pos: np.ndarray  # per fact: index into the pair tables
    values: np.ndarray  # float64 per fact

    def __len__(self) -> int:
        return len(self.values)

    def frame(self) -> pd.DataFrame:
        """DataFrame[ticker, accn, concept, unit, value] (object string columns)."""
        return pd.DataFrame(
            {
                "ticker": self.filing_ticker.take(self.filing_pos).to_pandas(),
                "accn": self.filing_accn.take(self.filing_pos).to_pandas(),
                "concept": self.pair_concept.take(self.pair_pos).to_pandas(),
                "unit": self.pair_unit.take(self.pair_pos).to_pandas(),
                "value": self.values,
            }
        )


def data_dir() -> Path:
    """`$NARRATIVE_DATA_DIR`, default `./data`."""
    return Path(os.environ.get("NARRATIVE_DATA_DIR", "data"))


def resolve_url(url: str | None = None) -> str:
    """The database URL: the argument, else NARRATIVE_DB_URL, else the original's MYSQL_*
    variables, else SQLite at $NARRATIVE_DATA_DIR/narrative.sqlite."""
    if url:
        return _with_mysql_charset(url)
    if os.environ.get("NARRATIVE_DB_URL"):
        return _with_mysql_charset(os.environ["NARRATIVE_DB_URL"])
    if os.environ.get("MYSQL_HOST"):
        return URL.create(
            "mysql+pymysql",
            username=os.environ.get("MYSQL_USER") or None,
            password=os.environ.get("MYSQL_PASSWORD") or None,
            host=os.environ["MYSQL_HOST"],
            port=int(os.environ["MYSQL_PORT"]) if os.environ.get("MYSQL_PORT") else None,
            database=os.environ.get("MYSQL_DATABASE") or "us_gaap",
            query={"charset": "utf8mb4"},
        ).render_as_string(hide_password=False)
    path = data_dir() / "narrative.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _with_mysql_charset(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL + synchronous=NORMAL: durable at checkpoints, no fsync per commit (bulk loads).

    A new database gets 64 KiB pages (set before WAL, which fixes the page size): fact writes
    measured 1.2x faster than with 4 KiB pages, 1.8x with their blocks, mostly in the commit's
    checkpoint (benchmarks/bench_sqlite_write.py). An existing file keeps its page size.
    """
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA page_size=65536")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


class DbUsGaap:
    """The US-GAAP database. `url=None` resolves it from the environment (see resolve_url)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        backend = make_url(self.url).get_backend_name()
        self.is_sqlite = backend == "sqlite"
        self.is_mysql = backend in ("mysql", "mariadb")
        if not (self.is_sqlite or self.is_mysql):
            raise ValueError(f"unsupported database {backend!r}: use sqlite:// or mysql+pymysql://")
        kwargs: dict[str, Any] = {"pool_pre_ping": self.is_mysql}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:
            kwargs["connect_args"] = {"local_infile": True}  # bulk facts via LOAD DATA
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._ph = "?" if self.is_sqlite else "%s"
        self._insert_ignore = "INSERT OR IGNORE" if self.is_sqlite else "INSERT IGNORE"
        self._pair_ids: dict[tuple[str, str], int] = {}
        self._load_data_ok = True
        create_schema(self.engine)
        migrations.add_missing_columns(self.engine, models.filing)  # an older database
        if self.is_sqlite:
            self._create_fact_blocks()
        self._adopt_untracked_filings()

    def _adopt_untracked_filings(self) -> None:
        """A database written before `filing_source` existed: attribute its filings once."""
        if self._query("SELECT 1 FROM filing_source LIMIT 1"):
            return
        if self._query("SELECT 1 FROM filing LIMIT 1"):
            with self._transaction() as cur:
                sources.adopt_untracked(cur)

    def _create_fact_blocks(self) -> None:
        """SQLite: the fact_block table and the triggers that keep it true (models.py)."""
        models.sqlite_metadata.create_all(self.engine)
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            for name, body in models.FACT_BLOCK_TRIGGERS.items():
                cur.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
            raw.commit()
        finally:
            raw.close()

    def __repr__(self) -> str:
        return f"DbUsGaap({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- transactions
    @contextmanager
    def _transaction(self, writes_facts: bool = False) -> Iterator[Any]:
        """A raw DBAPI cursor inside one transaction: committed on success, else rolled back.

        `writes_facts`: the caller keeps fact_block right itself, so on SQLite the guard
        triggers are dropped for this transaction and created again before it commits (DDL is
        transactional there, and no other writer can run meanwhile: nobody else ever sees
        the table without them).
        """
        guarded = writes_facts and self.is_sqlite
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN IMMEDIATE" if self.is_sqlite else "START TRANSACTION")
            if guarded:
                for name in models.FACT_BLOCK_TRIGGERS:
                    cur.execute(f"DROP TRIGGER IF EXISTS {name}")
            yield cur
            if guarded:
                for name, body in models.FACT_BLOCK_TRIGGERS.items():
                    cur.execute(f"CREATE TRIGGER {name} {body}")
            raw.commit()
        except BaseException:
            raw.rollback()
            self._pair_ids.clear()  # ids inserted in the failed transaction do not exist
            raise
        finally:
            raw.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(sql.replace("?", self._ph), tuple(params))
            return list(cur.fetchall())
        finally:
            raw.close()

    # ---------------------------------------------------------------- raw records
    def replace_ticker(
        self,
        result: Any,
        source_file: SourceFileState | None = None,
        *,
        allow_shrink: bool = False,
        notes: list[sources.SourceNote] | None = None,
    ) -> int:
        """Write `result`'s filings and facts for its ticker (`replace_fact_columns` with one
        ticker) and record `source_file` in the same transaction. Returns the facts written;
        raises what kept them out (a result with `error` is refused: its empty frames would
        erase data; a shrinking source raises sources.SourceShrinkRefused).
        """
        from narrative_pipeline.readers.base import fact_columns_from_result

        if getattr(result, "error", None):
            raise ValueError(f"{result.source}: unusable result not written ({result.error})")
        columns = fact_columns_from_result(result)
        outcome = self.replace_fact_columns(
            columns, [source_file], allow_shrink=allow_shrink, notes=notes
        )[0]
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)

    def replace_tickers(
        self,
        results: Sequence[Any],
        source_files: Sequence[SourceFileState | None] | None = None,
        *,
        allow_shrink: bool = False,
    ) -> list[int | Exception]:
        """`replace_ticker` for many results at once: one transaction, one bulk insert.

        Returns, per result, the facts written or the exception that kept it from being
        written. Results with `error` are refused (a ValueError in their slot). If the batch
        transaction fails, each ticker is retried in its own transaction, so one bad ticker
        never loses the others (and nothing already stored is lost: failed transactions roll
        back).
        """
        from narrative_pipeline.readers.base import concat_fact_columns, fact_columns_from_result

        outcomes: list[int | Exception] = [0] * len(results)
        parts, slots = [], []
        for i, result in enumerate(results):
            if getattr(result, "error", None):
                outcomes[i] = ValueError(
                    f"{result.source}: unusable result not written ({result.error})"
                )
                continue
            parts.append(fact_columns_from_result(result))
            slots.append(i)
        if parts:
            files = None if source_files is None else [source_files[i] for i in slots]
            written = self.replace_fact_columns(
                concat_fact_columns(parts), files, allow_shrink=allow_shrink
            )
            for i, outcome in zip(slots, written, strict=True):
                outcomes[i] = outcome
        return outcomes

    def replace_fact_columns(
        self,
        columns: Any,
        source_files: Sequence[SourceFileState | None] | None = None,
        *,
        allow_shrink: bool = False,
        notes: list[sources.SourceNote] | None = None,
        _check_repeats: bool = False,
    ) -> list[int | Exception]:
        """Replace every filing and fact of each ticker in `columns` (a readers FactColumns),
        all in one transaction; `source_files[t]`, when given, is recorded with ticker t.

        Returns per ticker the facts written or the exception that kept it out. Tickers whose
        facts the schema would reject are refused before the transaction; if the transaction
        fails anyway, every ticker is retried alone (replace semantics and atomicity per ticker
        are the same as `replace_ticker`'s). Repeated (accn, concept, unit) facts are looked for
        in the primary-key sort the write does anyway; when there are some, the write is rolled
        back and the batch checked ticker by ticker (`_check_repeats`).

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
        outcomes: list[int | Exception] = list(_check_columns(columns, pairs, _check_repeats))
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
                try:
                    outcomes[t] = self._write_columns(
                        batch.select([k]), [batch_files[k]], **options
                    )[0]
                except _Refused as refused:
                    outcomes[t] = refused.by_position[0]
                except Exception as one_exc:  # noqa: BLE001 - reported per ticker
                    outcomes[t] = one_exc
            return outcomes
        for k, t in enumerate(ok):
            outcomes[t] = int(counts[k])
        return outcomes

    def _write_without(
        self,
        columns: Any,
        files: list[SourceFileState | None],
        refused: dict[int, Exception],
        options: dict[str, Any],
        outcomes: list[int | Exception] | None = None,
    ) -> list[int | Exception]:
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
        columns: Any,
        files: list[SourceFileState | None],
        column_pairs: tuple[np.ndarray, list[tuple[str, str]]] | None = None,
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
        with self._transaction(writes_facts=True) as cur:
            plans = sources.plan_writes(
                cur, self._ph, columns.tickers, keys, [{r[0] for r in f} for f in columns.filings]
            )
            refused = sources.refusals(plans, columns.sources, allow_shrink)
            if refused:
                raise _Refused(refused)
            whole = [t for t, plan in enumerate(plans) if plan.whole]
            if len(whole) == len(plans):
                self._write_whole(cur, columns, column_pairs, keys)
            else:
                if whole:
                    self._write_whole(cur, columns.select(whole), None, [keys[t] for t in whole])
                for t, plan in enumerate(plans):
                    if not plan.whole:
                        note = self._write_shared(cur, columns.select([t]), keys[t], plan)
                        new_notes += [note] if note else []
            for state in files:
                if state is not None:
                    self._record(cur, state)
        if notes is not None:
            notes.extend(new_notes)
        return columns.fact_counts()

    def _write_shared(
        self, cur: Any, one: Any, key: str, plan: sources.TickerPlan
    ) -> sources.SourceNote | None:
        """One ticker (FactColumns of one) that shares filings with another source."""
        pair_index, pairs = _column_pairs(one)
        pair_ids = self._ensure_pairs(cur, pairs)[pair_index]
        return sources.write_shared(
            cur,
            self._ph,
            self.is_sqlite,
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
        columns: Any,
        column_pairs: tuple[np.ndarray, list[tuple[str, str]]] | None,
        keys: list[str],
    ) -> None:
        """Delete the tickers, insert their filings, facts and filing sources."""
        p = self._ph
        pair_index, pairs = column_pairs or _column_pairs(columns)
        filing_rows = [
            sources.filing_row(ticker, filing)
            for ticker, filings in zip(columns.tickers, columns.filings, strict=True)
            for filing in filings
        ]
        offsets = np.cumsum([0] + [len(f) for f in columns.filings])
        self._delete_tickers(cur, columns.tickers)
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
        sources.record_whole(cur, p, columns.tickers, keys, columns.filings)

    def _filing_ids(self, cur: Any, tickers: Sequence[str]) -> dict[tuple[str, str], int]:
        p = self._ph
        id_of: dict[tuple[str, str], int] = {}
        for chunk in _chunks(list(tickers), IN_CHUNK):
            cur.execute(
                f"SELECT ticker, accn, id FROM filing WHERE ticker IN ({','.join([p] * len(chunk))})",
                tuple(chunk),
            )
            for ticker, accn, filing_id in cur.fetchall():
                id_of[(ticker, accn)] = filing_id
        return id_of

    def _delete_tickers(self, cur: Any, tickers: Sequence[str]) -> None:
        """Facts by explicit filing ids (MariaDB runs `DELETE ... IN (SELECT ...)` as a scan of
        the whole fact table), then the filings: a few IN (...) statements for many tickers."""
        p = self._ph
        ids: list[int] = []
        for chunk in _chunks(list(tickers), IN_CHUNK):
            cur.execute(
                f"SELECT id FROM filing WHERE ticker IN ({','.join([p] * len(chunk))})",
                tuple(chunk),
            )
            ids += [row[0] for row in cur.fetchall()]
        for chunk in _chunks(list(tickers), IN_CHUNK):
            marks = ",".join([p] * len(chunk))
            cur.execute(f"DELETE FROM filing_source WHERE ticker IN ({marks})", tuple(chunk))
        tables = ("fact", "fact_block") if self.is_sqlite else ("fact",)
        for chunk in _chunks(ids, IN_CHUNK):
            for table in tables:
                cur.execute(
                    f"DELETE FROM {table} WHERE filing_id IN ({','.join([p] * len(chunk))})",
                    chunk,
                )
        if ids:
            for chunk in _chunks(list(tickers), IN_CHUNK):
                cur.execute(
                    f"DELETE FROM filing WHERE ticker IN ({','.join([p] * len(chunk))})",
                    tuple(chunk),
                )

    def _insert_facts(self, cur: Any, fid: np.ndarray, cid: np.ndarray, values: np.ndarray) -> None:
        """Bulk insert: executemany over plain tuples (pymysql turns it into multi-row INSERTs
        of up to ~1 MB; sqlite3 steps one prepared statement)."""
        if self.is_mysql and len(fid) >= LOAD_DATA_MIN_ROWS and self._load_data_ok:
            try:
                _load_data_local(cur, fid, cid, values)
                return
            except Exception as exc:  # noqa: BLE001 - server refuses LOCAL INFILE: fall back
                if getattr(exc, "args", (None,))[0] not in LOCAL_INFILE_REFUSED:
                    raise
                log.info("LOAD DATA LOCAL INFILE refused (%s); using multi-row INSERTs", exc)
                self._load_data_ok = False
        p = self._ph
        head = 0
        if self.is_sqlite and len(fid) >= SQLITE_ROWS_PER_INSERT:
            head = _insert_multi_row(cur, fid, cid, values)
        cur.executemany(
            f"INSERT INTO fact (filing_id, concept_unit_id, value) VALUES ({p},{p},{p})",
            zip(fid[head:].tolist(), cid[head:].tolist(), values[head:].tolist(), strict=True),
        )
        if self.is_sqlite:
            cur.executemany(
                'INSERT INTO fact_block (filing_id, n, pair_ids, "values") VALUES (?,?,?,?)',
                fact_reader.pack_blocks(fid, cid, values),
            )

    def delete_ticker(self, ticker: str) -> None:
        """Remove a ticker's filings and facts (e.g. its source file was deleted)."""
        with self._transaction(writes_facts=True) as cur:
            self._delete_tickers(cur, [ticker])

    def _ensure_pairs(self, cur: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
        """concept_unit ids for `pairs` (inserted when new), aligned with `pairs`."""
        missing = [pair for pair in pairs if pair not in self._pair_ids]
        if missing:
            p = self._ph
            cur.executemany(
                f"{self._insert_ignore} INTO concept_unit (concept, unit) VALUES ({p},{p})", missing
            )
            wanted = set(missing)
            concepts = sorted({c for c, _ in missing})
            for chunk in _chunks(concepts, IN_CHUNK):
                cur.execute(
                    "SELECT concept, unit, id FROM concept_unit WHERE concept IN "
                    f"({','.join([p] * len(chunk))})",
                    tuple(chunk),
                )
                for concept, unit, pair_id in cur.fetchall():
                    if (concept, unit) in wanted:
                        self._pair_ids[(concept, unit)] = pair_id
        return np.array([self._pair_ids[pair] for pair in pairs], dtype=np.int64)

    def fact_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM fact")[0][0])

    def filing_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM filing")[0][0])

    def tickers(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT ticker FROM filing ORDER BY ticker")]

    def facts_frame(
        self, tickers: Sequence[str] | None = None, filing_columns: Sequence[str] = ()
    ) -> pd.DataFrame:
        """DataFrame[ticker, accn, concept, unit, value] sorted by those four columns, then
        each of `filing_columns` (FILING_COLUMNS other than accn, e.g. `period_end`) of the
        fact's filing.

        Read as three numeric columns (filing id, pair id, value) and decoded with array
        lookups against the small filing and concept_unit tables.
        """
        codes = self.fact_codes(tickers)
        frame = codes.frame() if len(codes) else _empty_facts_frame()
        if filing_columns:
            frame = _with_filing_columns(frame, self.filings_frame(tickers, filing_columns))
        return frame

    def filings_frame(
        self, tickers: Sequence[str] | None = None, columns: Sequence[str] = FILING_COLUMNS[1:]
    ) -> pd.DataFrame:
        """DataFrame[ticker, accn, *columns] of the stored filings, sorted by ticker and accn
        (fy as Int64, is_amendment as boolean; NULL fields as missing values)."""
        unknown = [c for c in columns if c not in FILING_COLUMNS[1:]]
        if unknown:
            raise ValueError(f"unknown filing columns {unknown}; known: {FILING_COLUMNS[1:]}")
        names = ["ticker", "accn", *columns]
        rows = self._filing_rows(f"SELECT {', '.join(names)} FROM filing", tickers)
        return _typed_filings(pd.DataFrame(rows, columns=names))

    def fact_codes(self, tickers: Sequence[str] | None = None) -> FactCodes:
        """`facts_frame`'s rows, in the same order, as positions into the (small) filing and
        pair tables: no string object per fact (what the store build reads)."""
        filings = self._filings(tickers)
        pair_rows = self._pair_rows()
        ids = None if tickers is None else filings["id"].tolist()
        rows = self._fact_rows(ids) if len(filings) else np.zeros(0, dtype=FACT_ROW_DTYPE)
        return _decode_facts(rows, filings, pair_rows)

    def iter_fact_codes(self, target_rows: int = FACT_GROUP_ROWS) -> Iterator[FactCodes]:
        """`fact_codes` of every ticker, a group of sorted tickers (about `target_rows` facts)
        at a time, in order: what the store build streams, in bounded memory.

        On SQLite most filings are read from their fact_block (models.py), a blob pair each.
        The next groups are read while the caller works on this one: by one thread, or, when
        many filings must be read row by row (no blocks: a database written by an older
        version, or rows changed by another program), by helper processes on a second core
        (db/fact_reader.py: row conversion holds the GIL).
        """
        per_ticker = sorted(self._query("SELECT ticker, COUNT(*) FROM filing GROUP BY ticker"))
        if not per_ticker:
            return
        n_filings = sum(count for _, count in per_ticker)
        n_facts = self.fact_count()
        groups = _ticker_groups(per_ticker, n_facts / n_filings, target_rows)
        row_facts = n_facts * self._filings_without_blocks() / n_filings
        pair_rows = self._pair_rows()
        for filings, rows in self._read_fact_groups(groups, row_facts):
            yield _decode_facts(rows, filings, pair_rows)

    def _filings_without_blocks(self) -> int:
        """Filings whose facts must be read row by row (all of them off SQLite)."""
        if not self.is_sqlite:
            return self.filing_count()
        sql = "SELECT COUNT(*) FROM filing WHERE id NOT IN (SELECT filing_id FROM fact_block)"
        return int(self._query(sql)[0][0])

    def _read_fact_groups(
        self, groups: list[list[str]], row_facts: float
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """(filings, FACT_ROW_DTYPE rows) of each group of tickers, in order, read ahead of
        the caller (only a few groups' filings and rows are held at a time)."""
        source = self._reader_source()
        cores = os.cpu_count() or 1
        if (
            source is not None
            and cores >= 2
            and row_facts >= HELPER_MIN_ROW_FACTS
            and len(groups) >= 2
            and processes_enabled()
        ):
            helpers = min(READ_HELPERS, cores)
            by_id = ((f, f["id"].tolist()) for f in map(self._filings, groups))
            yield from fact_reader.read_groups_in_helpers(source, by_id, helpers, self._build_facts)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = [pool.submit(self._group_facts, tickers) for tickers in groups[:1]]
            for k in range(len(groups)):
                if k + 1 < len(groups):
                    pending.append(pool.submit(self._group_facts, groups[k + 1]))
                yield pending.pop(0).result()

    def _reader_source(self) -> dict | None:
        """What a fact-reader helper opens: this SQLite file, or the MySQL server with the
        connect arguments SQLAlchemy itself would pass to PyMySQL; None for an in-memory
        SQLite database (another process cannot see it)."""
        url = make_url(self.url)
        if self.is_sqlite:
            path = url.database
            return {"sqlite": path} if path and path != ":memory:" else None
        _, kwargs = self.engine.dialect.create_connect_args(url)
        return {"mysql": kwargs}

    def _group_facts(self, tickers: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        filings = self._filings(tickers)
        return filings, self._build_facts(filings["id"].tolist())

    def _build_facts(self, filing_ids: Sequence[int]) -> np.ndarray:
        """The rows of `filing_ids` as the build reads them: from fact_block where there is
        one (SQLite), else row by row."""
        if not self.is_sqlite:
            return self._fact_rows(filing_ids)
        raw = self.engine.raw_connection()
        try:
            return fact_reader.read_facts(raw.cursor(), filing_ids)
        finally:
            raw.close()

    def _filing_rows(self, sql: str, tickers: Sequence[str] | None) -> list[tuple]:
        """`sql` (a SELECT ... FROM filing) for every filing, or those of `tickers`."""
        if tickers is None:
            return self._query(sql)
        rows: list[tuple] = []
        for chunk in _chunks(sorted(set(tickers)), IN_CHUNK):
            rows += self._query(f"{sql} WHERE ticker IN ({','.join('?' * len(chunk))})", chunk)
        return rows

    def _filings(self, tickers: Sequence[str] | None) -> pd.DataFrame:
        rows = self._filing_rows("SELECT id, ticker, accn FROM filing", tickers)
        frame = pd.DataFrame(rows, columns=["id", "ticker", "accn"])
        return frame.sort_values("id").reset_index(drop=True)

    def _pair_rows(self) -> list[tuple]:
        return self._query("SELECT id, concept, unit FROM concept_unit ORDER BY id")

    def _fact_rows(self, filing_ids: Sequence[int] | None) -> np.ndarray:
        """(filing_id, pair_id, value) rows of `filing_ids` (None: every fact) as a
        FACT_ROW_DTYPE array: cursor rows straight into numpy, no list of tuples."""
        raw = self.engine.raw_connection()
        try:
            return fact_reader.read_fact_rows(raw.cursor(), filing_ids, self._ph)
        finally:
            raw.close()

    # ---------------------------------------------------------------- source files
    def record_source_file(
        self,
        path: str | Path,
        size: int | None = None,
        mtime: float | None = None,
        sha: str | None = None,
        ticker: str | None = None,
    ) -> SourceFileState:
        """Remember a loaded file (fingerprinted now when size/mtime/sha are not given)."""
        key = _path_key(path)
        if size is None or mtime is None or sha is None:
            size, mtime, sha = file_fingerprint(path)
        state = SourceFileState(key, ticker or Path(key).stem, int(size), float(mtime), sha)
        with self._transaction() as cur:
            self._record(cur, state)
        return state

    def _record(self, cur: Any, state: SourceFileState) -> None:
        p = self._ph
        cur.execute(
            "REPLACE INTO source_file (path, ticker, size, mtime, sha, loaded_at) "
            f"VALUES ({p},{p},{p},{p},{p},{p})",
            (
                _path_key(state.path),
                state.ticker,
                state.size,
                state.mtime,
                state.sha,
                datetime.now(UTC).replace(tzinfo=None, microsecond=0),
            ),
        )

    def source_file_state(self) -> dict[str, SourceFileState]:
        """path -> what was recorded when it was last loaded."""
        rows = self._query("SELECT path, ticker, size, mtime, sha, loaded_at FROM source_file")
        return {
            r[0]: SourceFileState(r[0], r[1], int(r[2]), float(r[3]), r[4], _as_datetime(r[5]))
            for r in rows
        }

    def source_file_unchanged(self, path: str | Path) -> bool:
        """True when `path` was loaded and has the same size and mtime, or the same content."""
        key = _path_key(path)
        rows = self._query("SELECT size, mtime, sha FROM source_file WHERE path = ?", (key,))
        return bool(rows) and _unchanged(path, *rows[0])

    def unchanged_source_files(self, paths: Sequence[str | Path]) -> list[bool]:
        """`source_file_unchanged` of each path, with one query for all of them."""
        if not paths:
            return []
        known = {r[0]: r[1:] for r in self._query("SELECT path, size, mtime, sha FROM source_file")}
        return [
            (key := _path_key(path)) in known and _unchanged(path, *known[key]) for path in paths
        ]

    def prune_missing_sources(self) -> dict[str, int]:
        """Forget source files gone from disk and delete the filings no other source holds
        (the explicit sweep; a missing file alone never drops data). Returns counts."""
        with self._transaction(writes_facts=True) as cur:
            return sources.prune_missing(cur, self._ph, self.is_sqlite)

    def forget_source_file(self, path: str | Path) -> None:
        with self._transaction() as cur:
            cur.execute(f"DELETE FROM source_file WHERE path = {self._ph}", (_path_key(path),))

    # ---------------------------------------------------------------- taxonomy
    def replace_taxonomy(self, frame: pd.DataFrame) -> dict[str, int]:
        """Replace the whole taxonomy with `frame` (columns TAXONOMY_COLUMNS; type columns
        hold names such as 'credit', 'instant', 'xbrli:monetaryItemType'). One transaction."""
        frame = frame.drop_duplicates(subset=["name"], keep="last").reset_index(drop=True)
        type_ids = {
            column: {v: i + 1 for i, v in enumerate(sorted(frame[column].dropna().unique()))}
            for column in ("concept_type", "balance_type", "period_type")
        }
        p = self._ph
        with self._transaction() as cur:
            for table in models.TAXONOMY_TABLES:
                cur.execute(f"DELETE FROM {table.name}")
            for column, ids in type_ids.items():
                cur.executemany(
                    f"INSERT INTO us_gaap_{column} (id, {column}) VALUES ({p},{p})",
                    [(i, name) for name, i in ids.items()],
                )
            cur.executemany(
                "INSERT INTO us_gaap_concept (id, name, concept_type_id, balance_type_id, "
                f"period_type_id, label, documentation) VALUES ({p},{p},{p},{p},{p},{p},{p})",
                _concept_rows(frame, type_ids),
            )
        counts = {"concepts": len(frame)}
        counts.update({f"{c}s": len(ids) for c, ids in type_ids.items()})
        return counts

    def taxonomy_frame(self) -> pd.DataFrame:
        """DataFrame[name, label, documentation, balance_type, period_type, concept_type]."""
        c, b, pt, ct = models.concept, models.balance_type, models.period_type, models.concept_type
        query = (
            select(
                c.c.name,
                c.c.label,
                c.c.documentation,
                b.c.balance_type,
                pt.c.period_type,
                ct.c.concept_type,
            )
            .select_from(
                c.outerjoin(b, c.c.balance_type_id == b.c.id)
                .outerjoin(pt, c.c.period_type_id == pt.c.id)
                .outerjoin(ct, c.c.concept_type_id == ct.c.id)
            )
            .order_by(c.c.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=TAXONOMY_COLUMNS)

    def taxonomy_concepts(self) -> set[str]:
        """Concept names of the loaded taxonomy (empty set: no taxonomy loaded)."""
        return {r[0] for r in self._query("SELECT name FROM us_gaap_concept")}


# -------------------------------------------------------------------- helpers
def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


def _column_pairs(columns: Any) -> tuple[np.ndarray, list[tuple[str, str]]]:
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
    pairs = [(str(concepts[k // n_u]), str(units[k % n_u])) for k in uniq.tolist()]
    return inverse.reshape(-1), pairs


def _tickers_with_unnamed_facts(columns: Any) -> dict[int, Exception]:
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
    columns: Any,
    column_pairs: tuple[np.ndarray, list[tuple[str, str]]] | None,
    repeats: bool = True,
) -> list[int | Exception]:
    """Per ticker: 0, or a ValueError for facts the schema would reject (no filing, a
    non-finite value, and with `repeats` a repeated (accn, concept, unit)), found before any
    write."""
    n = len(columns.tickers)
    out: list[int | Exception] = [0] * n
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


def _as_datetime(value: Any) -> datetime | None:
    """SQLite hands DATETIME back as text through the raw cursor; MySQL as datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _unchanged(path: str | Path, size: int, mtime: float, sha: str) -> bool:
    """The file has the recorded size and mtime, or the same content (touched only)."""
    stat = Path(path).stat()
    if stat.st_size != size:
        return False
    if stat.st_mtime == float(mtime):
        return True
    return file_fingerprint(path)[2] == sha


def _path_key(path: str | Path) -> str:
    """The absolute path with symlinks resolved (the same file under any spelling); the
    folder's resolution is cached (a resolve costs an lstat per path component)."""
    path = os.path.abspath(path)
    if os.path.islink(path):
        return str(Path(path).resolve())
    folder, name = os.path.split(path)
    return os.path.join(_resolved_folder(folder), name)


@functools.lru_cache(maxsize=4096)
def _resolved_folder(folder: str) -> str:
    return str(Path(folder).resolve())


def _none_if_na(values: list) -> list:
    return [
        None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in values
    ]


def _concept_rows(frame: pd.DataFrame, type_ids: dict[str, dict[str, int]]) -> list[tuple]:
    def ids(column: str) -> list:
        lookup = type_ids[column]
        return [lookup.get(v) for v in _none_if_na(frame[column].astype(object).tolist())]

    return list(
        zip(
            range(1, len(frame) + 1),
            frame["name"].astype(object).tolist(),
            ids("concept_type"),
            ids("balance_type"),
            ids("period_type"),
            _none_if_na(frame["label"].astype(object).tolist()),
            _none_if_na(frame["documentation"].astype(object).tolist()),
            strict=True,
        )
    )


def _typed_filings(frame: pd.DataFrame) -> pd.DataFrame:
    """A filings frame with the readers' dtypes, sorted by (ticker, accn)."""
    if "fy" in frame:
        frame["fy"] = pd.array(_none_if_na(frame["fy"].tolist()), dtype="Int64")
    if "is_amendment" in frame:
        values = _none_if_na(frame["is_amendment"].tolist())
        frame["is_amendment"] = pd.array(
            [None if v is None else bool(v) for v in values], dtype="boolean"
        )
    return frame.sort_values(["ticker", "accn"], kind="stable").reset_index(drop=True)


def _with_filing_columns(facts: pd.DataFrame, filings: pd.DataFrame) -> pd.DataFrame:
    """`facts` (in its order) with the columns of its rows' filings appended."""
    facts = facts.astype({"ticker": object, "accn": object})
    filings = filings.astype({"ticker": object, "accn": object})
    return facts.merge(filings, on=["ticker", "accn"], how="left", validate="many_to_one")


def _empty_facts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticker": pd.Series([], dtype="str"),
            "accn": pd.Series([], dtype="str"),
            "concept": pd.Series([], dtype="str"),
            "unit": pd.Series([], dtype="str"),
            "value": pd.Series([], dtype="float64"),
        }
    )


def _ticker_groups(
    per_ticker: list[tuple[str, int]], facts_per_filing: float, target_rows: int
) -> list[list[str]]:
    """The sorted tickers cut into groups of about `target_rows` facts, estimated from each
    ticker's filing count (facts per filing are alike); a ticker is never split."""
    groups: list[list[str]] = [[]]
    rows = 0.0
    for ticker, n_filings in per_ticker:
        if groups[-1] and rows + n_filings * facts_per_filing > target_rows:
            groups.append([])
            rows = 0.0
        groups[-1].append(ticker)
        rows += n_filings * facts_per_filing
    return groups


def _rank(*keys: pd.Series) -> np.ndarray:
    """Position of each row in the order sorted by `keys` (lexicographic)."""
    frame = pd.DataFrame({i: k.astype(object).to_numpy() for i, k in enumerate(keys)})
    order = frame.sort_values(list(frame.columns), kind="mergesort").index.to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _decode_facts(raw: np.ndarray, filings: pd.DataFrame, pair_rows: list[tuple]) -> FactCodes:
    """FACT_ROW_DTYPE rows -> FactCodes sorted by (ticker, accn, concept, unit); `filings`
    (id, ticker, accn) sorted by id, holding every filing of the rows."""
    pairs = pd.DataFrame(pair_rows, columns=["id", "concept", "unit"])
    filing_pos = np.searchsorted(filings["id"].to_numpy(), raw["filing_id"])
    pair_pos = np.searchsorted(pairs["id"].to_numpy(), raw["pair_id"])
    if len(raw):
        filing_rank = _rank(filings["ticker"], filings["accn"])
        pair_rank = _rank(pairs["concept"], pairs["unit"])
        order = np.lexsort((pair_rank[pair_pos], filing_rank[filing_pos]))
        filing_pos, pair_pos, values = filing_pos[order], pair_pos[order], raw["value"][order]
    else:
        values = np.zeros(0, dtype=np.float64)

    def strings(column: pd.Series) -> pa.Array:
        return pa.array(column.astype(object).tolist(), pa.large_string())

    return FactCodes(
        strings(filings["ticker"]),
        strings(filings["accn"]),
        strings(pairs["concept"]),
        strings(pairs["unit"]),
        filing_pos,
        pair_pos,
        values,
    )
