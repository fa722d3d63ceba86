"""Lightning callbacks of the Stage 1 loop: epoch shuffling, loss history, the budget-tied
learning-rate schedule, the wall-clock budget, per-epoch progress lines, quiet banners.

Each callback owns one concern so the loop (loop.py) only assembles them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from narrative_pipeline.training.model import Stage1Autoencoder

if TYPE_CHECKING:
    from pytorch_lightning.loops.progress import _ProcessedTracker

VAL_LOSS = "val_loss_epoch"
VALUE_ERROR = "val/value_median_rel_error"
EMBEDDING_LOSS = "val/embedding_loss"


def epoch_about_to_run(trainer: pl.Trainer) -> int:
    """Index of the training epoch that starts next, also right after a resume.

    `trainer.current_epoch` still reads the checkpoint's epoch at that point; the count of fully
    processed epochs is what Lightning itself hands to samplers' `set_epoch`.
    """
    # The fit loop's `_Progress()` holds `_ProcessedTracker`s; Lightning's annotation names the
    # base tracker (no `processed`), hence the cast.
    current = cast("_ProcessedTracker", trainer.fit_loop.epoch_progress.current)
    return int(current.processed)


class EpochSetter(Callback):
    """Reshuffle the training stream each epoch (before the epoch's iterator is created)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning sets `trainer.datamodule` in `fit`; its Trainer class does not declare it.
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        datamodule.train_set.set_epoch(epoch_about_to_run(trainer))


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


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose "best" may be the starting state, and which refreshes last.ckpt at
    the end of EVERY training epoch.

    Starting state: the loop validates the model before the first training step (Lightning's
    sanity check over the whole validation set; cold start: the initialisation, for
    pca_residual the PCA autoencoder; warm start: the previous checkpoint's weights). That
    score enters the top-k like any epoch's, so a run whose training never beats its start ends
    with the starting weights, and a warm run never replaces a better previous checkpoint.

    last.ckpt: Lightning 2.6 only rewrites it when a top-k checkpoint was saved in the same
    step; with a monitor that does not improve every epoch, last.ckpt (what resume reads) would
    lag behind the run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starting_score: float | None = None
        self.best_is_starting_state = False

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        candidates = self._monitor_candidates(trainer)
        current = candidates.get(self.monitor) if self.monitor else None
        if current is None or self.save_top_k == 0:
            return
        self.starting_score = float(current)
        self._update_best_and_save(current, trainer, candidates)

    def _update_best_and_save(
        self, current: torch.Tensor, trainer: pl.Trainer, monitor_candidates: dict[str, Any]
    ) -> None:
        super()._update_best_and_save(current, trainer, monitor_candidates)
        if trainer.sanity_checking:
            self.best_is_starting_state = True
        elif self.best_model_score is not None and float(current) <= float(self.best_model_score):
            self.best_is_starting_state = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_skip_saving_checkpoint(trainer):
            return
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class EarlyStoppingFromStart(EarlyStopping):
    """EarlyStopping whose reference is the starting state's score (see BestAndLastCheckpoint):
    `patience` epochs that do not beat the start end the run."""

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current = trainer.callback_metrics.get(self.monitor)
        if isinstance(current, torch.Tensor) and bool(torch.isfinite(current)):
            self.best_score = current.detach().clone().to(self.best_score.device)


class RunClock(Callback):
    """Wall-clock time of this fit and the mean epoch duration, shared by the callbacks below."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.epoch_started = self.started
        self.epoch_seconds: list[float] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.epoch_seconds.append(time.monotonic() - self.epoch_started)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def mean_epoch(self) -> float:
        return sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else 0.0


def budget_progress(
    epochs_done: int, max_epochs: int, elapsed: float, max_time: float | None
) -> float:
    """Share of the run's budget used: the larger of the epoch share and the time share."""
    share = epochs_done / max_epochs
    if max_time:
        share = max(share, elapsed / max_time)
    return min(1.0, share)


def cosine_rate(base: float, floor: float, progress: float) -> float:
    """One cosine decay from `base` at progress 0 to `floor` at progress 1 (never back up)."""
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


class BudgetCosineSchedule(Callback):
    """Sets the learning rate each epoch from the share of the budget used (see config.py).

    Tied to the run's own length, so the rate only falls: no mid-run restart can undo the
    accuracy the low-rate epochs bought (issue 11: the periodic schedule swung the value error
    20x with where training stopped).
    """

    def __init__(self, clock: RunClock, max_epochs: int, max_time: float | None) -> None:
        self.clock = clock
        self.max_epochs = max_epochs
        self.max_time = max_time
        self.first_epoch = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.first_epoch = epoch_about_to_run(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done = epoch_about_to_run(trainer)
        progress = budget_progress(done, self.max_epochs, self.clock.elapsed, self.max_time)
        if not isinstance(pl_module, Stage1Autoencoder):
            raise TypeError(f"BudgetCosineSchedule needs a Stage1Autoencoder, got {pl_module!r}")
        hparams = pl_module.typed_hparams
        rate = cosine_rate(hparams.learning_rate, hparams.eta_min, progress)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate
        pl_module.log("lr", rate, on_step=False, on_epoch=True)


class TimeBudget(Callback):
    """Stops after the epoch whose successor would not finish within `max_time` seconds.

    Lightning's own `max_time` (also set, as the hard limit) stops mid-epoch; stopping between
    epochs keeps the last epoch validated, so the final metrics and checkpoint are current.
    """

    def __init__(self, clock: RunClock, max_time: float) -> None:
        self.clock = clock
        self.max_time = max_time
        self.stopped_for_time = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.clock.elapsed + self.clock.mean_epoch > self.max_time:
            trainer.should_stop = True
            self.stopped_for_time = True


class EpochProgress(Callback):
    """One line per epoch: epoch, losses, value error, elapsed and ETA (Dagster log, CLI)."""

    def __init__(
        self,
        clock: RunClock,
        max_epochs: int,
        max_time: float | None,
        emit: Callable[[str], None],
    ) -> None:
        self.clock = clock
        self.max_epochs = max_epochs
        self.max_time = max_time
        self.emit = emit

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.emit(
            f"epoch 0/{self.max_epochs} (starting state, before any training step): "
            f"val loss {_fmt(metrics.get(VAL_LOSS))}, "
            f"val value median rel error {_fmt(metrics.get(VALUE_ERROR))}, "
            f"val embedding loss {_fmt(metrics.get(EMBEDDING_LOSS))}"
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        epoch = trainer.current_epoch + 1
        remaining = (self.max_epochs - epoch) * self.clock.mean_epoch
        if self.max_time:
            remaining = min(remaining, max(0.0, self.max_time - self.clock.elapsed))
        self.emit(
            f"epoch {epoch}/{self.max_epochs}: "
            f"train loss {_fmt(metrics.get('train_loss_epoch'))}, "
            f"val loss {_fmt(metrics.get(VAL_LOSS))}, "
            f"val value median rel error {_fmt(metrics.get(VALUE_ERROR))}, "
            f"lr {_fmt(metrics.get('lr'))}, "
            f"{self.clock.elapsed:.0f}s elapsed, ETA {remaining:.0f}s"
        )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


class _DropLightningTips(logging.Filter):
    """Drops Lightning's advertising banners ("💡 Tip: ... litlogger / litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


_TIPS_FILTER = _DropLightningTips()


def silence_lightning_tips() -> None:
    """Install the filter on the loggers Lightning's `rank_zero_info` writes to (idempotent)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _TIPS_FILTER not in logger.filters:
            logger.addFilter(_TIPS_FILTER)
