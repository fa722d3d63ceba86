"""The software-defined assets, in dependency order."""

from narrative_pipeline.assets.evaluation import stage1_evaluation
from narrative_pipeline.assets.ingestion import raw_records
from narrative_pipeline.assets.preprocessing import (
    concept_unit_pairs,
    embeddings,
    pca_model,
    scalers,
    triplets,
)
from narrative_pipeline.assets.training import stage1_checkpoint

ALL_ASSETS = [
    raw_records,
    concept_unit_pairs,
    embeddings,
    scalers,
    pca_model,
    triplets,
    stage1_checkpoint,
    stage1_evaluation,
]

__all__ = [
    "ALL_ASSETS",
    "concept_unit_pairs",
    "embeddings",
    "pca_model",
    "raw_records",
    "scalers",
    "stage1_checkpoint",
    "stage1_evaluation",
    "triplets",
]
