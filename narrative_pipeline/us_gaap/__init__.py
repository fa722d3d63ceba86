"""The UsGaapStore facade and its parts (layout, step machinery, reports, lookup objects)."""

from narrative_pipeline.us_gaap.cells import Cell, CellArrays, ConceptUnitPair
from narrative_pipeline.us_gaap.reports import (
    EmbeddingReport,
    IngestReport,
    PairsReport,
    PcaReport,
    ScalerReport,
    SkippedFile,
    TripletReport,
)
from narrative_pipeline.us_gaap.store import StaleTripletsError, UsGaapStore

__all__ = [
    "Cell",
    "CellArrays",
    "ConceptUnitPair",
    "EmbeddingReport",
    "IngestReport",
    "PairsReport",
    "PcaReport",
    "ScalerReport",
    "SkippedFile",
    "StaleTripletsError",
    "TripletReport",
    "UsGaapStore",
]
