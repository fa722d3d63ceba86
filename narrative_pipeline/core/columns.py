"""The column names of the data that crosses layers: filings and facts (reader -> database ->
store build) and the taxonomy frame (database -> embeddings). One list each, imported by every
producer and consumer, so a column added on one side cannot be missed on the other."""

from __future__ import annotations

# ReadResult.filings and the `filing` table, in this order. `accn` is the row key (unique per
# ticker); the last three come from sec-fetcher's current CSV layout and are NULL for older
# files and companyfacts (readers/sec_fetcher_layout.py).
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
# ReadResult.facts (one row per fact of one ticker).
FACT_COLUMNS = ("accn", "concept", "unit", "value")
# DbUsGaap.taxonomy_frame() and db.taxonomy's loaders.
TAXONOMY_COLUMNS = ["name", "label", "documentation", "balance_type", "period_type", "concept_type"]


def filing_fields(values: list) -> tuple:
    """FILING_COLUMNS[1:] values (from a frame row) as stored: fy an int, is_amendment a bool,
    None kept."""
    out = list(values)
    out[_FY_AT] = None if out[_FY_AT] is None else int(out[_FY_AT])
    out[_AMENDMENT_AT] = None if out[_AMENDMENT_AT] is None else bool(out[_AMENDMENT_AT])
    return tuple(out)
