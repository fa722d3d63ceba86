"""What the layers above the database need from it, as Protocols (`DbUsGaap` satisfies all).

Split by who needs what, so a caller asks for no more than it uses and a test stand-in
implements no more than the caller calls:

- `FactSource`: the store build and the Dagster assets read facts and the taxonomy back.
- `IngestTarget`: ingestion writes facts and remembers which source files it has loaded.
- `FactSourceAndTarget`: both of the above (ingest files, then build the store from them).
- `TaxonomyWriter`: `narrative-pipeline taxonomy load` replaces the taxonomy.
- `FactsDatabase`: all of the above (what `DatabaseResource.get_db()` returns).

And what the database needs from the readers' objects, so db/ names no higher layer:
- `FactBatch`: a batch of facts to write (readers.base.FactColumns satisfies it).
- `WritableResult`: one reader result that can turn itself into a FactBatch (ReadResult).

And `RawQueries`: the SQL the db/ modules next to `DbUsGaap` run on it (db/ticker_state.py).

Types from higher layers (`FactColumns`, `ReadResult`) are named for the type checker only;
at run time this module imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from narrative_pipeline.db.fact_readback import FactCodes
    from narrative_pipeline.db.source_files import SourceFileState
    from narrative_pipeline.db.sources import SourceNote
    from narrative_pipeline.readers.base import FactColumns, ReadResult


class FactBatch(Protocol):
    """Facts of several tickers as flat arrays (readers.base.FactColumns is the one in use).

    `filings[t]` lists ticker t's filings as FILING_COLUMNS tuples; each fact points at one of
    them by (`ticker_index`, `filing_index`); concept and unit are codes into `concepts` and
    `units`.
    """

    sources: list[str]
    tickers: list[str]
    filings: list[list[tuple]]
    ticker_index: np.ndarray
    filing_index: np.ndarray
    concepts: list[str]
    concept_code: np.ndarray
    units: list[str]
    unit_code: np.ndarray
    values: np.ndarray

    def fact_counts(self) -> np.ndarray: ...

    def select(self, keep: list[int]) -> FactBatch: ...


class WritableResult(Protocol):
    """One reader result as `DbUsGaap.replace_ticker` writes it (readers.base.ReadResult)."""

    source: str
    error: str | None

    def fact_columns(self) -> FactBatch: ...


class RawQueries(Protocol):
    """A database that runs one SELECT (`?` placeholders) and says whether it is SQLite.

    For db/ modules only (the method is DbUsGaap's private one): layers above use the
    Protocols below.
    """

    @property
    def is_sqlite(self) -> bool: ...

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...


@runtime_checkable
class FactSource(Protocol):
    """Facts and taxonomy, read back (store build, assets, asset checks)."""

    def tickers(self) -> list[str]: ...

    def fact_count(self) -> int: ...

    def facts_frame(self, tickers: Sequence[str] | None = None) -> pd.DataFrame:
        """DataFrame[ticker, accn, concept, unit, value], sorted in that order."""
        ...

    def fact_codes(self, tickers: Sequence[str] | None = None) -> FactCodes:
        """The facts of `tickers` (all when None) as codes (no string object per fact)."""
        ...

    def iter_fact_codes(self, target_rows: int = ...) -> Iterator[FactCodes]:
        """The facts in groups of whole tickers, in ticker order (what the store build streams)."""
        ...

    def taxonomy_frame(self) -> pd.DataFrame:
        """DataFrame[TAXONOMY_COLUMNS]; empty when no taxonomy is loaded."""
        ...


@runtime_checkable
class IngestTarget(Protocol):
    """Where ingestion writes (one transaction per ticker or batch of tickers)."""

    def taxonomy_concepts(self) -> set[str]: ...

    def source_file_unchanged(self, path: str | Path) -> bool: ...

    def record_source_file(
        self,
        path: str | Path,
        size: int | None = None,
        mtime: float | None = None,
        sha: str | None = None,
        ticker: str | None = None,
    ) -> object: ...

    def replace_ticker(
        self,
        result: ReadResult,
        source_file: SourceFileState | None = None,
        *,
        allow_shrink: bool = ...,
        notes: list[SourceNote] | None = ...,
    ) -> int: ...

    def replace_fact_columns(
        self,
        columns: FactColumns,
        source_files: Sequence[SourceFileState | None] | None = None,
        *,
        allow_shrink: bool = ...,
        notes: list[SourceNote] | None = ...,
    ) -> list[int | Exception]: ...


@runtime_checkable
class FactSourceAndTarget(FactSource, IngestTarget, Protocol):
    """Ingestion followed by the store build over what it wrote (`UsGaapStore.ingest_*`)."""


@runtime_checkable
class TaxonomyWriter(Protocol):
    def replace_taxonomy(self, frame: pd.DataFrame) -> dict[str, int]:
        """Replace the whole taxonomy; counts per table (concepts, concept_types, ...)."""
        ...


@runtime_checkable
class FactsDatabase(FactSource, IngestTarget, TaxonomyWriter, Protocol):
    """The whole database as the pipeline uses it."""

    def close(self) -> None: ...


if TYPE_CHECKING:
    from narrative_pipeline.db.database import DbUsGaap

    def _conforms(db: DbUsGaap) -> FactsDatabase:
        return db  # mypy checks here that DbUsGaap satisfies every Protocol above

    def _runs_raw_queries(db: DbUsGaap) -> RawQueries:
        return db


__all__ = [
    "FactBatch",
    "FactSource",
    "FactSourceAndTarget",
    "FactsDatabase",
    "IngestTarget",
    "RawQueries",
    "TaxonomyWriter",
    "WritableResult",
]
