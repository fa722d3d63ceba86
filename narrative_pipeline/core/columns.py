"""The column names of the data that crosses layers: filings and facts (reader -> database ->
store build) and the taxonomy frame (database -> embeddings). One list each, imported by every
producer and consumer, so a column added on one side cannot be missed on the other."""

from __future__ import annotations

# ReadResult.filings and the `filing` table, in this order.
FILING_COLUMNS = ("accn", "form", "fy", "fp", "filed")
# ReadResult.facts (one row per fact of one ticker).
FACT_COLUMNS = ("accn", "concept", "unit", "value")
# DbUsGaap.taxonomy_frame() and db.taxonomy's loaders.
TAXONOMY_COLUMNS = ["name", "label", "documentation", "balance_type", "period_type", "concept_type"]
