"""Stage 1 training: streaming dataset, autoencoder, Lightning loop, inference."""

from narrative_pipeline.training.config import TrainConfig
from narrative_pipeline.training.dataset import IterableConceptValueDataset, collate_with_scaler
from narrative_pipeline.training.loop import TrainResult, train_stage1
from narrative_pipeline.training.model import Stage1Autoencoder

__all__ = [
    "IterableConceptValueDataset",
    "Stage1Autoencoder",
    "TrainConfig",
    "TrainResult",
    "collate_with_scaler",
    "train_stage1",
]
