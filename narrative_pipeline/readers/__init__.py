"""Source files -> ReadResult (vectorised readers; bad content is reported, never raised)."""

from narrative_pipeline.readers.base import FACT_COLUMNS, FILING_COLUMNS, ReadResult
from narrative_pipeline.readers.companyfacts import read_companyfacts
from narrative_pipeline.readers.sec_fetcher_csv import iter_csv_files, read_sec_fetcher_csv

__all__ = [
    "FACT_COLUMNS",
    "FILING_COLUMNS",
    "ReadResult",
    "iter_csv_files",
    "read_companyfacts",
    "read_sec_fetcher_csv",
]
