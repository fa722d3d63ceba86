"""The Stage 1 training loop: Lightning Trainer, early stopping, checkpoints, TensorBoard.

`train_stage1` is what the `stage1_checkpoint` Dagster asset and `narrative-pipeline train run`
call. Everything it writes lives under `output_dir`: `checkpoints/stage1_resume.ckpt` (best by
`val_loss_epoch`), `checkpoints/last.ckpt` (for resuming), `stage1_autoencoder/version_N/`
(TensorBoard) and `stage1_loss_curve.png`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from narrative_pipeline.training.config import TrainConfig
from narrative_pipeline.training.dataset import IterableConceptValueDataset
from narrative_pipeline.training.model import Stage1Autoencoder

log = logging.getLogger(__name__)

MONITOR = "val_loss_epoch"
BEST_FILENAME = "stage1_resume"
LOGGER_NAME = "stage1_autoencoder"
# Hyper-parameters that fix the weight shapes: a resume must not change them.
SHAPE_HPARAMS = ("input_dim", "latent_dim", "hidden_dim", "n_hidden_layers")


@dataclass
class TrainResult:
    best_checkpoint_path: str
    last_checkpoint_path: str
    best_val_loss: float
    epochs_run: int
    metrics: dict[str, Any] = field(default_factory=dict)
    loss_curve_png: bytes = b""
    tensorboard_dir: str = ""


class Stage1DataModule(pl.LightningDataModule):
    """Train/validation loaders over the store; the train set's epoch follows the trainer's.

    Lightning creates the first iterator of a run (also after a resume) before
    `on_train_epoch_start`, so the starting epoch is set here, when the loader is requested
    (after the checkpoint's loop state is restored); `EpochSetter` handles the later epochs.
    """

    def __init__(self, store_factory: Callable[[], Any], config: TrainConfig) -> None:
        super().__init__()
        common = {
            "val_fraction": config.val_fraction,
            "internal_batch_size": config.internal_batch_size,
            "batch_size": config.batch_size,
            "seed": config.seed,
        }
        self.train_set = IterableConceptValueDataset(store_factory, split="train", **common)
        self.val_set = IterableConceptValueDataset(
            store_factory, split="val", shuffle=False, **common
        )
        self.num_workers = config.num_workers

    def _loader(self, dataset: IterableConceptValueDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None:
            self.train_set.set_epoch(epoch_about_to_run(self.trainer))
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)


class EpochSetter(Callback):
    """Reshuffle the training stream each epoch (before the epoch's iterator is created)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.datamodule.train_set.set_epoch(epoch_about_to_run(trainer))


def epoch_about_to_run(trainer: pl.Trainer) -> int:
    """Index of the training epoch that starts next, also right after a resume.

    `trainer.current_epoch` still reads the checkpoint's epoch at that point; the count of fully
    processed epochs is what Lightning itself hands to samplers' `set_epoch`.
    """
    return int(trainer.fit_loop.epoch_progress.current.processed)


class LossHistory(Callback):
    """Per-epoch train/val losses, kept in the checkpoint so a resumed run's curve is whole.

    Rows are written at `on_validation_end`, before ModelCheckpoint (which Lightning runs last)
    saves, so the train mean is accumulated here rather than read from `train_loss_epoch`,
    which Lightning only reduces after validation.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._train_sum: torch.Tensor | float = 0.0
        self._train_count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_sum, self._train_count = 0.0, 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        n = len(batch["x"])
        self._train_sum = self._train_sum + loss.detach() * n
        self._train_count += n

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val") and isinstance(value, torch.Tensor) and value.numel() == 1:
                row[key] = float(value)
        if self._train_count:
            row["train_loss_epoch"] = float(self._train_sum) / self._train_count
        self.epochs = [r for r in self.epochs if r["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))


def resolve_resume_path(config: TrainConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None; a requested but missing one is a ValueError."""
    if config.resume is False:
        return None
    path = (
        output_dir / "checkpoints" / "last.ckpt" if config.resume is True else Path(config.resume)
    )
    if not path.is_file():
        raise ValueError(
            f"resume requested but checkpoint {path} does not exist "
            f"(train once without resume first, or pass an existing .ckpt path)"
        )
    return path


def check_resume_compatible(path: Path, model_hparams: dict[str, Any]) -> None:
    """Fail before training when the checkpoint's weight shapes differ from the new model's."""
    saved = torch.load(path, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    changed = {
        k: (saved.get(k), model_hparams[k])
        for k in SHAPE_HPARAMS
        if saved.get(k) != model_hparams[k]
    }
    if changed:
        detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in changed.items())
        raise ValueError(f"cannot resume from {path}: model shape changed ({detail})")


def build_model(config: TrainConfig, input_dim: int) -> Stage1Autoencoder:
    return Stage1Autoencoder(
        input_dim=input_dim,
        latent_dim=config.latent_dim,
        hidden_dim=config.hidden_dim,
        n_hidden_layers=config.n_hidden_layers,
        dropout=config.dropout,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        loss=config.loss,
        embedding_weight=config.embedding_weight,
        value_weight=config.value_weight,
        t_max=config.t_max,
        eta_min=config.eta_min,
    )


@contextmanager
def _float32_matmul_precision(value: str) -> Iterator[None]:
    """torch's process-wide float32 matmul precision for the fit, then the caller's again."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def train_stage1(
    store_factory: Callable[[], Any], config: TrainConfig, output_dir: str | Path
) -> TrainResult:
    """Train (or resume) the Stage 1 autoencoder on the store's cells; see the module docstring.

    `store_factory` must be picklable when `config.num_workers > 0`: each worker calls it to open
    its own store connection.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    output_dir = Path(output_dir)
    resume_path = resolve_resume_path(config, output_dir)
    pl.seed_everything(config.seed, workers=True)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)

    store = store_factory()
    matrix, pair_names = store.get_embedding_matrix()
    n_cells = int(store.get_triplet_count())
    if n_cells == 0 or len(pair_names) == 0:
        raise ValueError("the store holds no cells or no pair embeddings: run the triplets asset")
    model = build_model(config, input_dim=int(matrix.shape[1]) + 1)
    if resume_path is not None:
        check_resume_compatible(resume_path, dict(model.hparams))
    model.attach_pair_info(store.load_scalers(), list(pair_names))

    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename=BEST_FILENAME,
        monitor=MONITOR,
        mode="min",
        save_top_k=config.save_top_k,
        save_last=True,
        # Fixed names: `resume=True` reads last.ckpt, so a second run must not write last-v1.ckpt.
        enable_version_counter=False,
    )
    history = LossHistory()
    logger = TensorBoardLogger(save_dir=str(output_dir), name=LOGGER_NAME)
    trainer = pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        gradient_clip_val=config.gradient_clip_val,
        precision=config.precision,
        deterministic=config.deterministic,
        logger=logger,
        callbacks=[
            EarlyStopping(
                monitor=MONITOR, mode="min", patience=config.patience, min_delta=config.min_delta
            ),
            checkpoint,
            history,
            EpochSetter(),
        ],
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        log_every_n_steps=10,
    )
    log.info(
        "training stage 1 on %d cells, %d pairs, input dim %d",
        n_cells,
        len(pair_names),
        matrix.shape[1] + 1,
    )
    with _float32_matmul_precision(config.float32_matmul_precision):
        trainer.fit(
            model, datamodule=Stage1DataModule(store_factory, config), ckpt_path=resume_path
        )

    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)
    }
    metrics.update({k: v for k, v in model.last_validation_report.items() if isinstance(v, str)})
    metrics["stopped_early"] = bool(
        trainer.should_stop and trainer.current_epoch < config.max_epochs
    )
    curve = loss_curve_png(history.epochs)
    (output_dir / "stage1_loss_curve.png").write_bytes(curve)
    best_score = checkpoint.best_model_score
    return TrainResult(
        best_checkpoint_path=str(checkpoint.best_model_path),
        last_checkpoint_path=str(checkpoint.last_model_path),
        best_val_loss=float(best_score) if best_score is not None else math.nan,
        epochs_run=int(trainer.current_epoch),
        metrics=metrics,
        loss_curve_png=curve,
        tensorboard_dir=str(logger.log_dir),
    )


def loss_curve_png(epochs: list[dict[str, float]]) -> bytes:
    """Train and validation loss per epoch as a PNG (log scale when all losses are positive)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for key, label in (("train_loss_epoch", "train"), (MONITOR, "validation")):
            points = [(r["epoch"], r[key]) for r in epochs if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        values = [r[k] for r in epochs for k in ("train_loss_epoch", MONITOR) if k in r]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("Stage 1 autoencoder")
        if epochs:
            ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
