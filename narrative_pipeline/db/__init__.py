"""The US-GAAP database (taxonomy + raw filings and facts) on SQLite or MySQL/MariaDB.

Names are imported on first use (PEP 562), so a helper process that needs only
`db.fact_reader` does not pay for SQLAlchemy and pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from narrative_pipeline.core.columns import (
    FILING_COLUMNS,
    FILING_URL_MAX_CHARS,
    TAXONOMY_COLUMNS,
    filing_fields,
)

if TYPE_CHECKING:
    from narrative_pipeline.db.database import (
        DbUsGaap,
        SourceFileState,
        file_fingerprint,
        resolve_url,
    )

__all__ = [
    "FILING_COLUMNS",
    "FILING_URL_MAX_CHARS",
    "filing_fields",
    "TAXONOMY_COLUMNS",
    "DbUsGaap",
    "SourceFileState",
    "file_fingerprint",
    "resolve_url",
]
_LAZY = ("DbUsGaap", "SourceFileState", "file_fingerprint", "resolve_url")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("narrative_pipeline.db.database"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
