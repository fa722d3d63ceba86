"""The training asset: the Stage 1 autoencoder checkpoint, on a GPU when the deployment has one."""

# No `from __future__ import annotations`: Dagster reads the Config/resource annotations at runtime.

import dagster as dg

from narrative_pipeline.assets.metadata import (
    png_markdown,
    report_metadata,
    tensorboard_sparkline,
    timed,
)
from narrative_pipeline.resources import PathsResource, StoreResource

TRAINING_GROUP = "training"
GPU_POOL = "gpu"
# On Kubernetes (dagster-k8s) the step's pod asks for one GPU; elsewhere the tag is inert and
# Lightning's accelerator="auto" picks the CPU when no GPU is present.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
    },
}


class Stage1TrainingConfig(dg.Config):
    """Training settings shown in the launchpad; unset fields keep `TrainConfig`'s defaults."""

    max_epochs: int = 1000
    batch_size: int = 1024
    learning_rate: float = 1e-3
    loss: str = "mse"  # "mse" | "l1"
    latent_dim: int = 256
    patience: int = 20
    resume: bool = False  # continue from <data_dir>/training/checkpoints/last.ckpt
    num_workers: int = 0
    seed: int = 0
    val_fraction: float = 0.1
    accelerator: str = "auto"  # "auto" uses a GPU when present, else the CPU
    devices: int = 1  # GPUs per node; with >1 use strategy "ddp_spawn" (docs/DEPLOYMENT.md)
    strategy: str = "auto"
    precision: str = "32-true"  # Lightning precision, e.g. "bf16-mixed" for wide models on GPUs
    float32_matmul_precision: str = "highest"  # "high": TF32 on NVIDIA tensor cores

    def to_train_config(self):
        from narrative_pipeline.training import TrainConfig

        return TrainConfig(**self.model_dump())


@dg.asset(
    deps=["triplets", "pca_model", "scalers"],
    group_name=TRAINING_GROUP,
    kinds={"pytorch", "python"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    description=(
        "Stage 1 autoencoder (PyTorch Lightning) trained on every cell: input = the pair's PCA "
        "embedding + the scaled value. Checkpoint under <data_dir>/training/checkpoints. "
        "GPU-tagged (pool 'gpu', one nvidia.com/gpu on Kubernetes); runs on the CPU otherwise."
    ),
)
def stage1_checkpoint(
    context: dg.AssetExecutionContext,
    config: Stage1TrainingConfig,
    store: StoreResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    from narrative_pipeline.training import train_stage1

    train_config = config.to_train_config()
    output_dir = paths.subdir("training")
    context.log.info(
        "training stage 1: max_epochs=%d batch=%d lr=%g loss=%s latent=%d resume=%s, store %s",
        train_config.max_epochs,
        train_config.batch_size,
        train_config.learning_rate,
        train_config.loss,
        train_config.latent_dim,
        train_config.resume,
        store.describe(),
    )
    metadata: dict = {}
    with timed(metadata, "training_seconds"):
        result = train_stage1(store.us_gaap_store_factory(), train_config, output_dir)
    context.log.info(
        "trained %d epoch(s); best val loss %.6g; checkpoint %s",
        result.epochs_run,
        result.best_val_loss,
        result.best_checkpoint_path,
    )
    metadata.update(report_metadata(result, skip=("metrics", "best_checkpoint_path")))
    metadata["checkpoint_path"] = dg.MetadataValue.path(result.best_checkpoint_path)
    metadata["metrics"] = dg.MetadataValue.json(
        {k: v for k, v in result.metrics.items() if isinstance(v, bool | int | float | str)}
    )
    for name, value in result.metrics.items():  # flat numbers: the UI plots them across runs
        if isinstance(value, int | float) and not isinstance(value, bool) and "pair_id" not in name:
            metadata[f"metric_{name.replace('/', '_')}"] = float(value)
    metadata["train_config"] = dg.MetadataValue.json(train_config.to_dict())
    losses = {"train": "train_loss_epoch", "validation": "val_loss_epoch"}
    spark = tensorboard_sparkline(result.tensorboard_dir, losses, "loss per epoch")
    if spark is not None:  # shows in the metadata table; the full PNG is one click away
        metadata["loss_per_epoch"] = spark
    if result.loss_curve_png:
        metadata["loss_curve"] = png_markdown(result.loss_curve_png, "Train and validation loss")
    return dg.MaterializeResult(metadata=metadata)
