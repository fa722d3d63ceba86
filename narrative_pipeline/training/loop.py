"""The Stage 1 training loop: Lightning Trainer, early stopping, checkpoints, TensorBoard.

`train_stage1` is what the `stage1_checkpoint` Dagster asset and `narrative-pipeline train run`
call. Everything it writes lives under `output_dir`: `checkpoints/stage1_resume.ckpt` (best by
`config.monitor` among the trained epochs AND the starting state, scored before the first step:
a run never ends worse than it started), `checkpoints/last.ckpt` (for resuming),
`stage1_autoencoder/version_N/` (TensorBoard), `stage1_loss_curve.png` and `final_metrics.json`. The last three and last.ckpt
are also written when the run is cancelled (SIGTERM, Dagster's cancel, Ctrl-C), before the
interruption propagates. Runs are bounded by `max_epochs` and `max_time`, may warm-start from
a compatible checkpoint (warm_start.py), and never train on held-out tickers (splits.py). A
configured latent that is no bottleneck (not below the input width) is capped
(`TrainConfig.effective_latent_dim`); both sizes are logged and saved in the checkpoint.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from narrative_pipeline.training.callbacks import (
    VAL_LOSS,
    VALUE_ERROR,
    BestAndLastCheckpoint,
    BudgetCosineSchedule,
    EarlyStoppingFromStart,
    EpochProgress,
    EpochSetter,
    LossHistory,
    RunClock,
    TimeBudget,
    epoch_about_to_run,
    silence_lightning_tips,
)
from narrative_pipeline.training.config import BOTTLENECK_FRACTION, TrainConfig
from narrative_pipeline.training.dataset import IterableConceptValueDataset
from narrative_pipeline.training.evaluation import read_split, split_indices
from narrative_pipeline.training.linear_path import PCA_FIT_MAX_CELLS
from narrative_pipeline.training.model import Stage1Autoencoder
from narrative_pipeline.training.splits import resolve_heldout_tickers
from narrative_pipeline.training.warm_start import (
    choose_warm_start,
    input_signature,
    load_weights,
    shape_mismatch,
)

if TYPE_CHECKING:
    from narrative_pipeline.us_gaap.store import UsGaapStore

log = logging.getLogger(__name__)

MONITOR = VAL_LOSS  # the loss curve's validation line
BEST_FILENAME = "stage1_resume"
LOGGER_NAME = "stage1_autoencoder"
FINAL_METRICS = "final_metrics.json"


@dataclass
class TrainResult:
    best_checkpoint_path: str
    last_checkpoint_path: str
    best_val_loss: float
    epochs_run: int
    metrics: dict[str, Any] = field(default_factory=dict)
    loss_curve_png: bytes = b""
    tensorboard_dir: str = ""
    heldout_tickers: list[str] = field(default_factory=list)
    warm_start: str = ""
    latent_dim: int = 0  # the size used (see TrainConfig.effective_latent_dim)
    configured_latent_dim: int = 0
    # The monitored score of the state before any training step (cold: the initialisation;
    # warm: the previous checkpoint; NaN on resume) and whether the best checkpoint is it.
    starting_score: float = math.nan
    kept_starting_state: bool = False


class Stage1DataModule(pl.LightningDataModule):
    """Train/validation loaders over the store; the train set's epoch follows the trainer's.

    Lightning creates the first iterator of a run (also after a resume) before
    `on_train_epoch_start`, so the starting epoch is set here, when the loader is requested
    (after the checkpoint's loop state is restored); `EpochSetter` handles the later epochs.
    """

    def __init__(
        self,
        store_factory: Callable[[], Any],
        config: TrainConfig,
        heldout_tickers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.train_set = self._dataset(store_factory, config, heldout_tickers, "train")
        self.val_set = self._dataset(store_factory, config, heldout_tickers, "val")
        self.num_workers = config.num_workers

    @staticmethod
    def _dataset(
        store_factory: Callable[[], Any],
        config: TrainConfig,
        heldout_tickers: Sequence[str],
        split: Literal["train", "val"],
    ) -> IterableConceptValueDataset:
        """The split's stream; only the training one is shuffled."""
        return IterableConceptValueDataset(
            store_factory,
            split=split,
            shuffle=split == "train",
            val_fraction=config.val_fraction,
            internal_batch_size=config.internal_batch_size,
            batch_size=config.batch_size,
            seed=config.seed,
            heldout_tickers=tuple(heldout_tickers),
        )

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
    changed = shape_mismatch(saved, model_hparams)
    if changed:
        raise ValueError(f"cannot resume from {path}: model shape changed ({changed})")


def warm_start_candidate(config: TrainConfig, output_dir: Path) -> Path | None:
    """The checkpoint a warm start would read (its compatibility is checked later): the previous
    run's best (what the evaluation scored), else its last.ckpt."""
    if config.warm_start is False:
        return None
    if config.warm_start is True:
        best = output_dir / "checkpoints" / f"{BEST_FILENAME}.ckpt"
        return best if best.is_file() else output_dir / "checkpoints" / "last.ckpt"
    return Path(config.warm_start)


def latent_note(config: TrainConfig, latent_dim: int, input_dim: int) -> str:
    """How the latent size was chosen, for the run's log."""
    if latent_dim == config.latent_dim:
        return f"latent {latent_dim}"
    return (
        f"latent {latent_dim} (configured {config.latent_dim} is not below the input width "
        f"{input_dim}, so it would be no bottleneck: capped to {BOTTLENECK_FRACTION:g} of it)"
    )


def starting_state_label(config: TrainConfig, warm_path: Path | None) -> str:
    if warm_path is not None:
        return f"the warm-start checkpoint {warm_path.name}"
    if config.architecture == "pca_residual":
        return "the PCA initialisation"
    return "the random initialisation"


def build_model(config: TrainConfig, input_dim: int) -> Stage1Autoencoder:
    """The model for `input_dim`-wide inputs, its latent capped to a bottleneck when needed."""
    return Stage1Autoencoder(
        input_dim=input_dim,
        latent_dim=config.effective_latent_dim(input_dim),
        configured_latent_dim=config.latent_dim,
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
        lr_schedule=config.lr_schedule,
        architecture=config.architecture,
        linear_value=config.linear_value,
    )


def fit_linear_path(
    model: Stage1Autoencoder,
    store: UsGaapStore,
    matrix: np.ndarray,
    heldout: list[str],
    config: TrainConfig,
) -> None:
    """Fit a `pca_residual` model's PCA path on the training split's cells (never on held-out
    tickers or validation cells; a seeded sample beyond PCA_FIT_MAX_CELLS)."""
    indices = split_indices(store, heldout, config.val_fraction)
    train = read_split(
        store, "train", indices["train"], np.asarray(matrix, np.float32), PCA_FIT_MAX_CELLS,
        config.seed,
    )  # fmt: skip
    model.fit_linear_path(train.x)


@contextmanager
def _float32_matmul_precision(value: str) -> Iterator[None]:
    """torch's process-wide float32 matmul precision for the fit, then the caller's again."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@dataclass
class _Run:
    """What one fit assembled, for writing its outputs (also after an interruption)."""

    trainer: pl.Trainer
    model: Stage1Autoencoder
    checkpoint: BestAndLastCheckpoint
    history: LossHistory
    time_budget: TimeBudget | None
    logger: TensorBoardLogger
    output_dir: Path
    heldout: list[str]
    warm_reason: str
    starting_state: str  # "" on resume: the starting state is not a candidate then


def train_stage1(
    store_factory: Callable[[], Any],
    config: TrainConfig,
    output_dir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume, or warm-start) the Stage 1 autoencoder; see the module docstring.

    `store_factory` must be picklable when `config.num_workers > 0`: each worker calls it to open
    its own store connection. `progress` receives one line per epoch (default: this module's
    logger at INFO).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    output_dir = Path(output_dir)
    resume_path = resolve_resume_path(config, output_dir)
    emit = progress or log.info
    silence_lightning_tips()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)

    store = store_factory()
    matrix, pair_names = store.get_embedding_matrix()
    n_cells = int(store.get_triplet_count())
    if n_cells == 0 or len(pair_names) == 0:
        raise ValueError("the store holds no cells or no pair embeddings: run the triplets asset")
    tickers = list(store.get_tickers()) if hasattr(store, "get_tickers") else []
    heldout = resolve_heldout_tickers(
        tickers, config.heldout_tickers, config.heldout_ticker_fraction
    )
    input_dim = int(matrix.shape[1]) + 1
    model = build_model(config, input_dim=input_dim)
    if resume_path is not None:
        check_resume_compatible(resume_path, dict(model.hparams))
    warm = choose_warm_start(
        warm_start_candidate(config, output_dir), dict(model.hparams), matrix, pair_names
    )
    if warm.path is not None:
        load_weights(model, warm.path)
    elif resume_path is None and model.pca_path is not None:
        fit_linear_path(model, store, matrix, heldout, config)
    model.attach_pair_info(store.load_scalers(), list(pair_names))
    model.training_inputs = {
        "heldout_tickers": heldout,
        "val_fraction": config.val_fraction,
        "signature": input_signature(matrix, pair_names),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    start = "" if resume_path is not None else starting_state_label(config, warm.path)
    run = _assemble(config, model, output_dir, emit, heldout, warm.reason, start)
    emit(
        f"training stage 1 on {n_cells} cells, {len(pair_names)} pairs, input dim {input_dim}, "
        f"{latent_note(config, model.typed_hparams.latent_dim, input_dim)}; held-out tickers "
        f"{heldout or 'none'}; {warm.reason}; budget {config.max_epochs} epochs"
        + (f", {config.max_time:g}s" if config.max_time else "")
    )
    datamodule = Stage1DataModule(store_factory, config, heldout)
    try:
        with _float32_matmul_precision(config.float32_matmul_precision):
            run.trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path)
    except BaseException as exc:  # cancel / SIGTERM / Ctrl-C / errors: keep what was learned
        _save_interrupted(run, exc)
        raise
    result = _finish(run, config, interrupted="")
    emit(selection_note(run, config.monitor_metric))
    return result


def selection_note(run: _Run, monitor: str) -> str:
    """Which state the best checkpoint holds and why (the starting state or a trained epoch)."""
    checkpoint = run.checkpoint
    trained = [r[monitor] for r in run.history.epochs if math.isfinite(r.get(monitor, math.nan))]
    best_trained = f"{min(trained):.6g}" if trained else "n/a"
    if checkpoint.best_is_starting_state:
        return (
            f"best checkpoint: kept the starting state ({run.starting_state}), {monitor} "
            f"{checkpoint.starting_score:.6g}: no trained epoch beat it (best trained "
            f"{best_trained})"
        )
    start = (
        f"; starting state ({run.starting_state}) {checkpoint.starting_score:.6g}"
        if checkpoint.starting_score is not None
        else ""
    )
    return f"best checkpoint: a trained epoch, {monitor} {best_trained}{start}"


def _assemble(
    config: TrainConfig,
    model: Stage1Autoencoder,
    output_dir: Path,
    emit: Callable[[str], None],
    heldout: list[str],
    warm_reason: str,
    starting_state: str,
) -> _Run:
    """The Trainer and its callbacks for one fit. Unless resuming (`starting_state` ""), the
    whole validation set is scored before the first step (Lightning's sanity check) and that
    starting state competes for "best" (BestAndLastCheckpoint, EarlyStoppingFromStart)."""
    checkpoint = BestAndLastCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename=BEST_FILENAME,
        monitor=config.monitor_metric,
        mode="min",
        save_top_k=config.save_top_k,
        save_last=True,
        # Fixed names: `resume=True` reads last.ckpt, so a second run must not write last-v1.ckpt.
        enable_version_counter=False,
    )
    clock, history = RunClock(), LossHistory()
    callbacks: list[pl.Callback] = [
        clock,
        EarlyStoppingFromStart(
            monitor=config.monitor_metric,
            mode="min",
            patience=config.patience,
            min_delta=config.min_delta,
        ),
        checkpoint,
        history,
        EpochSetter(),
        EpochProgress(clock, config.max_epochs, config.max_time, emit),
    ]
    if config.lr_schedule == "budget":
        callbacks.append(BudgetCosineSchedule(clock, config.max_epochs, config.max_time))
    time_budget = TimeBudget(clock, config.max_time) if config.max_time else None
    if time_budget is not None:
        callbacks.append(time_budget)
    logger = TensorBoardLogger(save_dir=str(output_dir), name=LOGGER_NAME)
    trainer = pl.Trainer(
        max_epochs=config.max_epochs,
        max_time=timedelta(seconds=config.max_time) if config.max_time else None,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        gradient_clip_val=config.gradient_clip_val,
        precision=config.precision,
        deterministic=config.deterministic,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=-1 if starting_state else 0,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        log_every_n_steps=10,
    )
    return _Run(
        trainer, model, checkpoint, history, time_budget, logger, output_dir, heldout,
        warm_reason, starting_state,
    )  # fmt: skip


def _save_interrupted(run: _Run, exc: BaseException) -> None:
    """After a cancel: last.ckpt, final metrics and the loss curve; never masks the cause."""
    reason = type(exc).__name__
    log.warning("training interrupted (%s): saving last checkpoint and final metrics", reason)
    try:
        folder = Path(run.checkpoint.dirpath or run.output_dir / "checkpoints")
        folder.mkdir(parents=True, exist_ok=True)
        run.trainer.save_checkpoint(str(folder / "last.ckpt"))
    except Exception:  # noqa: BLE001 - the interruption is the error to report
        log.exception("could not save the last checkpoint after the interruption")
    try:
        _finish(run, None, interrupted=reason)
    except Exception:  # noqa: BLE001
        log.exception("could not write the final metrics after the interruption")


def _finish(run: _Run, config: TrainConfig | None, interrupted: str) -> TrainResult:
    """Metrics, loss curve and final_metrics.json of a finished (or interrupted) fit."""
    trainer, model = run.trainer, run.model
    metrics: dict[str, Any] = {
        k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)
    }
    metrics.update({k: v for k, v in model.last_validation_report.items() if isinstance(v, str)})
    max_epochs = trainer.max_epochs or 0
    metrics["stopped_early"] = bool(trainer.should_stop and trainer.current_epoch < max_epochs)
    metrics["stopped_for_time"] = bool(run.time_budget and run.time_budget.stopped_for_time)
    metrics["interrupted"] = interrupted
    curve = loss_curve_png(run.history.epochs)
    (run.output_dir / "stage1_loss_curve.png").write_bytes(curve)
    best_score = run.checkpoint.best_model_score
    result = TrainResult(
        best_checkpoint_path=str(run.checkpoint.best_model_path),
        last_checkpoint_path=str(Path(run.checkpoint.dirpath or run.output_dir) / "last.ckpt"),
        best_val_loss=float(best_score) if best_score is not None else math.nan,
        epochs_run=epoch_about_to_run(trainer),
        metrics=metrics,
        loss_curve_png=curve,
        tensorboard_dir=str(run.logger.log_dir),
        heldout_tickers=list(run.heldout),
        warm_start=run.warm_reason,
        latent_dim=run.model.typed_hparams.latent_dim,
        configured_latent_dim=run.model.typed_hparams.configured_latent_dim,
        starting_score=(
            math.nan if run.checkpoint.starting_score is None else run.checkpoint.starting_score
        ),
        kept_starting_state=run.checkpoint.best_is_starting_state,
    )
    summary = {k: v for k, v in result.__dict__.items() if k != "loss_curve_png"}
    (run.output_dir / FINAL_METRICS).write_text(json.dumps(summary, indent=2, default=str))
    return result


def loss_curve_png(epochs: list[dict[str, float]]) -> bytes:
    """Train/validation loss per epoch (log scale when positive) and, on a second axis, the
    validation value median relative error: the loss alone hides typical-cell accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for key, label in (("train_loss_epoch", "train loss"), (MONITOR, "validation loss")):
            points = [(r["epoch"], r[key]) for r in epochs if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        values = [r[k] for r in epochs for k in ("train_loss_epoch", MONITOR) if k in r]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("Stage 1 autoencoder")
        errors = [
            (r["epoch"], r[VALUE_ERROR])
            for r in epochs
            if math.isfinite(r.get(VALUE_ERROR, math.nan))
        ]
        if errors and min(e for _, e in errors) > 0:
            right = ax.twinx()
            right.plot(
                *zip(*errors, strict=True), color="tab:green", label="val value median rel error"
            )
            right.set_yscale("log")
            right.set_ylabel("value median relative error")
            right.legend(loc="upper right")
        if epochs:
            ax.legend(loc="upper left")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
