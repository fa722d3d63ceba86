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


# Tags of runs started by the CSV sensor and the daily schedule (sensors.py, schedules.py).
TRIGGER_TAG = "narrative/trigger"
AUTOMATIC_TRIGGERS = ("csv_folder_sensor", "daily_ingestion_sweep")


class Stage1TrainingConfig(dg.Config):
    """Training settings shown in the launchpad; unset fields keep `TrainConfig`'s defaults.

    The defaults bound a run: at most `max_epochs` epochs and `max_time` seconds (a CPU
    "Materialize all" on the generated sample trains in well under 2 minutes). Runs started by
    the sensor or the schedule warm-start from the last compatible checkpoint with the smaller
    `warm_max_epochs` / `warm_max_time` budget (`warm_start`: "auto", "always" or "never").
    """

    max_epochs: int = 60
    max_time: float = 90.0  # seconds of training per run; 0 = no limit
    batch_size: int = 1024
    learning_rate: float = 1e-4  # see TrainConfig (training/config.py) for these defaults
    loss: str = "mse"  # "mse" | "l1" | "huber"
    latent_dim: int = 96
    architecture: str = "pca_residual"  # or "mlp" (the MLP alone, the first design)
    lr_schedule: str = "budget"  # "budget" | "cosine_periodic" (the original's) | "constant"
    monitor: str = "auto"  # or "val/value_median_rel_error", "val/embedding_loss", "val_loss_epoch"
    patience: int = 20
    resume: bool = False  # continue from <data_dir>/training/checkpoints/last.ckpt
    warm_start: str = "auto"  # "auto": warm for sensor/schedule runs; "always"; "never"
    warm_max_epochs: int = 15
    warm_max_time: float = 30.0
    warm_learning_rate_factor: float = 0.3  # warm runs start at a lower rate
    heldout_tickers: list[str] = []  # empty: heldout_ticker_fraction by stable ticker hash
    heldout_ticker_fraction: float = 0.2
    num_workers: int = 0
    seed: int = 0
    val_fraction: float = 0.1
    accelerator: str = "auto"  # "auto" uses a GPU when present, else the CPU
    devices: int = 1  # GPUs per node; with >1 use strategy "ddp_spawn" (docs/DEPLOYMENT.md)
    strategy: str = "auto"
    precision: str = "32-true"  # Lightning precision, e.g. "bf16-mixed" for wide models on GPUs
    float32_matmul_precision: str = "highest"  # "high": TF32 on NVIDIA tensor cores

    def wants_warm_start(self, run_tags: dict) -> bool:
        if self.warm_start not in ("auto", "always", "never"):
            raise ValueError(f"warm_start must be auto, always or never, got {self.warm_start!r}")
        if self.resume or self.warm_start == "never":
            return False
        return self.warm_start == "always" or run_tags.get(TRIGGER_TAG) in AUTOMATIC_TRIGGERS

    def to_train_config(self, warm: bool = False):
        from narrative_pipeline.training import TrainConfig

        fields = self.model_dump(
            exclude={"warm_start", "warm_max_epochs", "warm_max_time", "warm_learning_rate_factor"}
        )
        fields["max_time"] = self.max_time or None
        if warm:
            fields.update(
                warm_start=True,
                max_epochs=self.warm_max_epochs,
                max_time=self.warm_max_time or None,
                learning_rate=self.learning_rate * self.warm_learning_rate_factor,
            )
        return TrainConfig(**fields)


@dg.asset(
    deps=["triplets", "pca_model", "scalers"],
    group_name=TRAINING_GROUP,
    kinds={"pytorch", "python"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    description=(
        "Stage 1 autoencoder (PyTorch Lightning) trained on the cells of all but the held-out "
        "tickers: input = the pair's PCA embedding + the scaled value, bounded by max_epochs / "
        "max_time. Checkpoint under <data_dir>/training/checkpoints. "
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

    warm = config.wants_warm_start(dict(context.run.tags))
    train_config = config.to_train_config(warm=warm)
    output_dir = paths.subdir("training")
    context.log.info(
        "training stage 1: max_epochs=%d max_time=%s batch=%d lr=%g loss=%s configured latent=%d "
        "resume=%s warm_start=%s (trigger %s), store %s",
        train_config.max_epochs,
        train_config.max_time,
        train_config.batch_size,
        train_config.learning_rate,
        train_config.loss,
        train_config.latent_dim,
        train_config.resume,
        warm,
        context.run.tags.get(TRIGGER_TAG, "manual"),
        store.describe(),
    )
    metadata: dict = {}
    with timed(metadata, "training_seconds"):
        result = train_stage1(
            store.us_gaap_store_factory(), train_config, output_dir, progress=context.log.info
        )
    context.log.info(
        "trained %d epoch(s); latent %d (configured %d); best %s %.6g (%s); checkpoint %s; %s",
        result.epochs_run,
        result.latent_dim,
        result.configured_latent_dim,
        train_config.monitor_metric,
        result.best_val_loss,
        "kept the starting state" if result.kept_starting_state else "a trained epoch",
        result.best_checkpoint_path,
        result.warm_start,
    )
    metadata.update(
        report_metadata(result, skip=("metrics", "best_checkpoint_path", "heldout_tickers"))
    )
    metadata["heldout_tickers"] = ", ".join(result.heldout_tickers) or "none"
    metadata["warm_start"] = result.warm_start  # what happened, and why
    metadata["warm_start_requested"] = bool(warm)
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
