"""What the layers above the database need from it, as Protocols (`DbUsGaap` satisfies all).

Split by who needs what, so a caller asks for no more than it uses and a test stand-in
implements no more than the caller calls:

- `FactSource`: the store build and the Dagster assets read facts and the taxonomy back.
- `IngestTarget`: ingestion writes facts and remembers which source files it has loaded.
- `FactSourceAndTarget`: both of the above (ingest files, then build the store from them).
- `TaxonomyWriter`: `narrative-pipeline taxonomy load` replaces the taxonomy.
- `FactsDatabase`: all of the above (what `DatabaseResource.get_db()` returns).

Types from higher layers (`FactColumns`, `ReadResult`) are named for the type checker only;
at run time this module imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from narrative_pipeline.db.database import FactCodes, SourceFileState
    from narrative_pipeline.db.sources import SourceNote
    from narrative_pipeline.readers.base import FactColumns, ReadResult


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


__all__ = ["FactSource", "FactSourceAndTarget", "FactsDatabase", "IngestTarget", "TaxonomyWriter"]
