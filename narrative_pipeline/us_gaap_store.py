"""`from narrative_pipeline.us_gaap_store import UsGaapStore`: the facade lives in narrative_pipeline/us_gaap/."""

from narrative_pipeline.us_gaap import (
    Cell,
    CellArrays,
    ConceptUnitPair,
    EmbeddingReport,
    IngestReport,
    PairsReport,
    PcaReport,
    ScalerReport,
    SkippedFile,
    StaleTripletsError,
    TripletReport,
    UsGaapStore,
)

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
