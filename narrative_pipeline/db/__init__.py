"""The US-GAAP database (taxonomy + raw filings and facts) on SQLite or MySQL/MariaDB.

Names are imported on first use (PEP 562), so a helper process that needs only
`db.fact_reader` does not pay for SQLAlchemy and pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# The taxonomy_frame() contract, here so that callers without SQLAlchemy (fakes, the GPU
# benchmark) share it.
TAXONOMY_COLUMNS = ["name", "label", "documentation", "balance_type", "period_type", "concept_type"]

# A filing row's fields, in the order readers give them and `filing` stores them. `accn` is the
# row key (unique per ticker); the last three come from sec-fetcher's current CSV layout and
# are NULL for older files and companyfacts (readers/sec_fetcher_layout.py).
FILING_COLUMNS = (
    "accn",
    "form",
    "fy",
    "fp",
    "filed",
    "period_end",
    "is_amendment",
    "filing_url",
)
FILING_URL_MAX_CHARS = 1000  # longer URLs are stored as NULL (with a per-file message)
_FY_AT, _AMENDMENT_AT = FILING_COLUMNS.index("fy") - 1, FILING_COLUMNS.index("is_amendment") - 1


def filing_fields(values: list) -> tuple:
    """FILING_COLUMNS[1:] values (from a frame row) as stored: fy an int, is_amendment a bool,
    None kept."""
    out = list(values)
    out[_FY_AT] = None if out[_FY_AT] is None else int(out[_FY_AT])
    out[_AMENDMENT_AT] = None if out[_AMENDMENT_AT] is None else bool(out[_AMENDMENT_AT])
    return tuple(out)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("narrative_pipeline.db.database"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
