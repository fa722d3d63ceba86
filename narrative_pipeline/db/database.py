"""DbUsGaap: the US-GAAP taxonomy and the raw filings/facts, on SQLite or MySQL/MariaDB.

A thin facade: each job lives in its own module and this class hands calls to it.

- db/engine.py: URL, engine, schema set-up, raw transactions and queries.
- db/fact_writer.py: the one fact write path (`replace_fact_columns`; `replace_ticker` is it
  for one reader result).
- db/fact_readback.py: counts, `facts_frame`, `filings_frame`, `fact_codes`, `iter_fact_codes`.
- db/source_files.py: which source files were loaded (incremental ingestion).
- db/taxonomy_tables.py: the taxonomy tables.
- db/sources.py: which file holds which filing, and the rules that keep a write from
  dropping stored filings.

One code path for both back ends (SQLAlchemy for the schema and small queries; the raw DBAPI
cursor for bulk rows, because building a dict or an ORM object per fact would cost more than
the database itself). Writes of one ticker happen in one transaction, so a failure leaves the
previous data of that ticker intact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine, make_url

from narrative_pipeline.core.columns import FILING_COLUMNS
from narrative_pipeline.core.fingerprint import file_fingerprint
from narrative_pipeline.db import sources, taxonomy_tables
from narrative_pipeline.db.engine import Backend, data_dir, resolve_url
from narrative_pipeline.db.fact_readback import FACT_GROUP_ROWS, FactCodes, FactReadback
from narrative_pipeline.db.fact_writer import FactWriter
from narrative_pipeline.db.protocol import FactBatch, WritableResult
from narrative_pipeline.db.source_files import SourceFiles, SourceFileState

__all__ = [
    "DbUsGaap",
    "FactCodes",
    "SourceFileState",
    "data_dir",
    "file_fingerprint",
    "resolve_url",
]


class DbUsGaap:
    """The US-GAAP database. `url=None` resolves it from the environment (see resolve_url)."""

    def __init__(self, url: str | None = None) -> None:
        self._backend = Backend(url)
        self._writer = FactWriter(self._backend)
        self._reader = FactReadback(self._backend)
        self._files = SourceFiles(self._backend)
        self._adopt_untracked_filings()

    def _adopt_untracked_filings(self) -> None:
        """A database written before `filing_source` existed: attribute its filings once."""
        if self._query("SELECT 1 FROM filing_source LIMIT 1"):
            return
        if self._query("SELECT 1 FROM filing LIMIT 1"):
            with self._transaction() as cur:
                sources.adopt_untracked(cur)

    # ---------------------------------------------------------------- connection
    @property
    def url(self) -> str:
        return self._backend.url

    @property
    def engine(self) -> Engine:
        return self._backend.engine

    @property
    def is_sqlite(self) -> bool:
        return self._backend.is_sqlite

    @property
    def is_mysql(self) -> bool:
        return self._backend.is_mysql

    @property
    def _ph(self) -> str:
        return self._backend.ph

    @property
    def _load_data_ok(self) -> bool:
        return self._writer.load_data_ok

    def __repr__(self) -> str:
        return f"DbUsGaap({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def _transaction(self, writes_facts: bool = False) -> AbstractContextManager[Any]:
        """A raw DBAPI cursor in one transaction (engine.Backend.transaction)."""
        return self._backend.transaction(writes_facts)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._backend.query(sql, params)

    # ---------------------------------------------------------------- fact writes
    def replace_ticker(
        self,
        result: WritableResult,
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
        if result.error:
            raise ValueError(f"{result.source}: unusable result not written ({result.error})")
        outcome = self.replace_fact_columns(
            result.fact_columns(), [source_file], allow_shrink=allow_shrink, notes=notes
        )[0]
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)

    def replace_fact_columns(
        self,
        columns: FactBatch,
        source_files: Sequence[SourceFileState | None] | None = None,
        *,
        allow_shrink: bool = False,
        notes: list[sources.SourceNote] | None = None,
    ) -> list[int | Exception]:
        """Replace every filing and fact of each ticker in `columns`; per ticker the facts
        written or what kept them out (fact_writer.FactWriter.replace_fact_columns)."""
        return self._writer.replace_fact_columns(
            columns, source_files, allow_shrink=allow_shrink, notes=notes
        )

    def delete_ticker(self, ticker: str) -> None:
        """Remove a ticker's filings and facts (e.g. its source file was deleted)."""
        with self._transaction(writes_facts=True) as cur:
            self._writer.delete_tickers(cur, [ticker])

    # ---------------------------------------------------------------- fact read-back
    def fact_count(self) -> int:
        return self._reader.fact_count()

    def filing_count(self) -> int:
        return self._reader.filing_count()

    def tickers(self) -> list[str]:
        return self._reader.tickers()

    def facts_frame(
        self, tickers: Sequence[str] | None = None, filing_columns: Sequence[str] = ()
    ) -> pd.DataFrame:
        """DataFrame[ticker, accn, concept, unit, value] sorted by those four columns, then
        `filing_columns` of each fact's filing (fact_readback.FactReadback.facts_frame)."""
        return self._reader.facts_frame(tickers, filing_columns)

    def filings_frame(
        self, tickers: Sequence[str] | None = None, columns: Sequence[str] = FILING_COLUMNS[1:]
    ) -> pd.DataFrame:
        """DataFrame[ticker, accn, *columns] of the stored filings, sorted by ticker and accn."""
        return self._reader.filings_frame(tickers, columns)

    def fact_codes(self, tickers: Sequence[str] | None = None) -> FactCodes:
        """`facts_frame`'s rows as positions into the filing and pair tables."""
        return self._reader.fact_codes(tickers)

    def iter_fact_codes(self, target_rows: int = FACT_GROUP_ROWS) -> Iterator[FactCodes]:
        """`fact_codes` of every ticker, a group of whole tickers at a time, in order."""
        return self._reader.iter_fact_codes(target_rows)

    def _filings_without_blocks(self) -> int:
        return self._reader.filings_without_blocks()

    def _fact_rows(self, filing_ids: Sequence[int] | None) -> np.ndarray:
        return self._reader.fact_rows(filing_ids)

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
        return self._files.record_source_file(path, size, mtime, sha, ticker)

    def source_file_state(self) -> dict[str, SourceFileState]:
        """path -> what was recorded when it was last loaded."""
        return self._files.source_file_state()

    def source_file_unchanged(self, path: str | Path) -> bool:
        """True when `path` was loaded and has the same size and mtime, or the same content."""
        return self._files.source_file_unchanged(path)

    def unchanged_source_files(self, paths: Sequence[str | Path]) -> list[bool]:
        """`source_file_unchanged` of each path, with one query for all of them."""
        return self._files.unchanged_source_files(paths)

    def prune_missing_sources(self) -> dict[str, int]:
        """Forget source files gone from disk and delete the filings no other source holds."""
        return self._files.prune_missing_sources()

    def forget_source_file(self, path: str | Path) -> None:
        self._files.forget_source_file(path)

    # ---------------------------------------------------------------- taxonomy
    def replace_taxonomy(self, frame: pd.DataFrame) -> dict[str, int]:
        """Replace the whole taxonomy with `frame` (TAXONOMY_COLUMNS). One transaction."""
        return taxonomy_tables.replace_taxonomy(self._backend, frame)

    def taxonomy_frame(self) -> pd.DataFrame:
        """DataFrame[name, label, documentation, balance_type, period_type, concept_type]."""
        return taxonomy_tables.taxonomy_frame(self._backend)

    def taxonomy_concepts(self) -> set[str]:
        """Concept names of the loaded taxonomy (empty set: no taxonomy loaded)."""
        return taxonomy_tables.taxonomy_concepts(self._backend)
