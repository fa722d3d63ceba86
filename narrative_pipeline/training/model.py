"""The Stage 1 autoencoder: one (concept, unit, value) cell -> an L2-normalised latent vector.

Input is `[PCA embedding of the pair, scaled value]`; the target is the input. The value also
modulates every hidden layer (FiLM-style gain and bias computed from the value), a lighter
stand-in for the original's value-modulated attention that keeps the value from being drowned
out by the hundreds of embedding dimensions.

Two architectures (`architecture`): "mlp" (the MLP alone, the first design) and "pca_residual"
(a frozen PCA path fitted on the training cells plus the same MLPs as zero-initialised
residuals: at step 0 the model IS a PCA autoencoder and training can only add nonlinear
structure; see linear_path.py for why and how its latent stays a unit vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.types import OptimizerLRScheduler
from torch import nn

from narrative_pipeline.training.config import LossName
from narrative_pipeline.training.linear_path import PcaPath
from narrative_pipeline.training.metrics import (
    cell_value_metrics,
    inverse_scale_by_pair,
    per_pair_value_metrics,
    summarise_pair_metrics,
)

ARCHITECTURES = ("mlp", "pca_residual")
LOSS_FUNCTIONS = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.smooth_l1_loss}
# Checkpoint entry with what the model was trained on (held-out tickers, input signature).
TRAINING_INPUTS_KEY = "narrative_pipeline_training_inputs"


@dataclass(frozen=True)
class Stage1Hparams:
    """The constructor's arguments, typed, read once in `Stage1Autoencoder.__init__`.

    Why: Lightning's `self.hparams` (saved in checkpoints under these same names) is an untyped
    mapping; the model and its callers read this copy instead so type checkers see each field.
    """

    input_dim: int
    latent_dim: int
    hidden_dim: int
    n_hidden_layers: int
    dropout: float
    learning_rate: float
    weight_decay: float
    loss: LossName
    embedding_weight: float
    value_weight: float
    t_max: int
    eta_min: float
    lr_schedule: str
    architecture: str
    linear_value: bool
    # What the run was configured with; latent_dim is the size used (capped to a bottleneck
    # when the configured one was not below input_dim: TrainConfig.effective_latent_dim).
    configured_latent_dim: int


class ValueModulatedBlock(nn.Module):
    """Linear -> LayerNorm -> (1 + gain(value)) * h + bias(value) -> GELU."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.film = nn.Linear(1, 2 * out_dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        gain, bias = self.film(value).chunk(2, dim=-1)
        h = self.norm(self.linear(h)) * (1.0 + gain) + bias
        return self.dropout(F.gelu(h))


class Stage1Autoencoder(pl.LightningModule):
    """MLP autoencoder with value-modulated hidden layers and an L2-normalised latent.

    Per-pair value metrics on inverse-scaled values need the fitted scalers; the training loop
    hands them over with `attach_pair_info` (they are data, not hyper-parameters, so they are
    not saved in checkpoints). Without them only the scaled-space metrics are logged.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 256,
        hidden_dim: int = 512,
        n_hidden_layers: int = 2,
        dropout: float = 0.0,
        learning_rate: float = 1e-3,
        weight_decay: float = 5.2e-7,
        loss: LossName = "mse",
        embedding_weight: float = 1.0,
        value_weight: float = 1.0,
        t_max: int = 15,
        eta_min: float = 1e-6,
        lr_schedule: str = "cosine_periodic",
        architecture: str = "mlp",
        linear_value: bool = True,
        configured_latent_dim: int | None = None,
    ) -> None:
        super().__init__()
        if input_dim < 2:
            raise ValueError(f"input_dim must be >= 2 (embedding + value), got {input_dim}")
        if loss not in LOSS_FUNCTIONS:
            raise ValueError(f"loss must be one of {tuple(LOSS_FUNCTIONS)}, got {loss!r}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if architecture == "pca_residual" and latent_dim < 2:
            raise ValueError("architecture 'pca_residual' needs latent_dim >= 2 (code + lift)")
        if configured_latent_dim is None:
            configured_latent_dim = latent_dim
        self.save_hyperparameters()
        self.typed_hparams = Stage1Hparams(
            input_dim=input_dim,
            latent_dim=latent_dim,
            hidden_dim=hidden_dim,
            n_hidden_layers=n_hidden_layers,
            dropout=dropout,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            loss=loss,
            embedding_weight=embedding_weight,
            value_weight=value_weight,
            t_max=t_max,
            eta_min=eta_min,
            lr_schedule=lr_schedule,
            architecture=architecture,
            linear_value=linear_value,
            configured_latent_dim=configured_latent_dim,
        )
        widths = [input_dim] + [hidden_dim] * n_hidden_layers
        self.encoder_blocks = nn.ModuleList(
            ValueModulatedBlock(a, b, dropout) for a, b in zip(widths, widths[1:], strict=False)
        )
        # pca_residual: the encoder MLP adds to the PCA code (latent_dim - 1 numbers, lifted).
        self.pca_path = (
            PcaPath(input_dim, latent_dim - 1) if architecture == "pca_residual" else None
        )
        code_dim = latent_dim if self.pca_path is None else latent_dim - 1
        self.to_latent = nn.Linear(widths[-1], code_dim)
        dec_widths = [latent_dim] + [hidden_dim] * n_hidden_layers
        self.decoder_blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b), nn.GELU())
            for a, b in zip(dec_widths, dec_widths[1:], strict=False)
        )
        self.to_output = nn.Linear(dec_widths[-1], input_dim)
        if self.pca_path is not None:  # residual branches start at exactly zero
            for layer in (self.to_latent, self.to_output):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.scalers: Sequence[Any] | None = None
        self.pair_names: Sequence[tuple[str, str]] | None = None
        self.last_validation_report: dict[str, Any] = {}
        # Held-out tickers and the input signature, saved in checkpoints (see loop.py).
        self.training_inputs: dict[str, Any] = {}
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

    def attach_pair_info(
        self, scalers: Sequence[Any] | None, pair_names: Sequence[tuple[str, str]] | None
    ) -> None:
        """Give the model the per-pair scalers and names used by the validation metrics."""
        self.scalers = scalers
        self.pair_names = pair_names

    def fit_linear_path(self, train_x: np.ndarray) -> None:
        """Fit the frozen PCA path on training inputs (only for architecture "pca_residual")."""
        if self.pca_path is None:
            raise ValueError("fit_linear_path needs architecture 'pca_residual'")
        self.pca_path.fit(train_x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vectors (unit L2 norm) for inputs `[embedding, scaled value]`."""
        value = x[:, -1:]
        h = x
        for block in self.encoder_blocks:
            h = block(h, value)
        if self.pca_path is None:
            return F.normalize(self.to_latent(h), dim=-1)
        residual = self.to_latent(h)
        if self.typed_hparams.linear_value:
            residual = self.pca_path.without_value_direction(residual)
        return self.pca_path.lift(self.pca_path.project(x) + residual)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for block in self.decoder_blocks:
            h = block(h)
        if self.pca_path is None:
            return self.to_output(h)
        residual = self.to_output(h)
        if self.typed_hparams.linear_value:  # the value output is the linear path's alone
            residual = torch.cat([residual[:, :-1], torch.zeros_like(residual[:, -1:])], dim=-1)
        return self.pca_path.reconstruct(self.pca_path.unlift(z)) + residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def _losses(self, x: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted embedding + value reconstruction losses, and the embedding cosine.

        The embedding term is summed over its dimensions (squared / absolute L2-style distance
        per cell, averaged over the batch), so the whole embedding and the single value weigh
        alike at weight 1: averaged per dimension, the small PCA components were ignored
        (on the real CSVs: embedding cosine 0.20 averaged vs 0.87 with 100x weight).
        """
        loss_fn = LOSS_FUNCTIONS[self.typed_hparams.loss]
        per_dim = loss_fn(recon[:, :-1], x[:, :-1], reduction="none")
        embedding_loss = per_dim.sum(dim=1).mean()
        value_loss = loss_fn(recon[:, -1], x[:, -1])
        total = (
            self.typed_hparams.embedding_weight * embedding_loss
            + self.typed_hparams.value_weight * value_loss
        )
        cosine = F.cosine_similarity(recon[:, :-1], x[:, :-1], dim=-1).mean()
        return {
            "loss": total,
            "embedding_loss": embedding_loss,
            "value_loss": value_loss,
            "embedding_cosine": cosine,
        }

    def _log_losses(self, stage: str, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        self.log(
            f"{stage}_loss_epoch", losses["loss"], on_step=False, on_epoch=True,
            prog_bar=True, batch_size=batch_size,
        )  # fmt: skip
        for name in ("embedding_loss", "value_loss", "embedding_cosine"):
            self.log(
                f"{stage}/{name}", losses[name], on_step=False, on_epoch=True,
                batch_size=batch_size,
            )  # fmt: skip

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        recon, _ = self(x)
        losses = self._losses(x, recon)
        self.log("train_loss", losses["loss"], on_step=True, on_epoch=False, batch_size=len(x))
        self._log_losses("train", losses, len(x))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        recon, _ = self(x)
        losses = self._losses(x, recon)
        self._log_losses("val", losses, len(x))
        if "unscaled" in batch and "pair_id" in batch:
            self._val_outputs.append(
                (recon[:, -1].detach().cpu(), batch["unscaled"].cpu(), batch["pair_id"].cpu())
            )
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        """Per-pair median relative error and R2 on inverse-scaled values, worst pair included."""
        outputs, self._val_outputs = self._val_outputs, []
        # Also in Lightning's sanity check: the loop runs it to score the starting state.
        if not outputs or self.scalers is None:
            return
        predicted = torch.cat([o[0] for o in outputs]).double().numpy()
        actual = torch.cat([o[1] for o in outputs]).double().numpy()
        pair_id = torch.cat([o[2] for o in outputs]).numpy()
        predicted_unscaled = inverse_scale_by_pair(predicted, pair_id, self.scalers)
        table = per_pair_value_metrics(predicted_unscaled, actual, pair_id)
        report = summarise_pair_metrics(table, self.pair_names)
        report.update(cell_value_metrics(predicted_unscaled, actual))
        # Always logged (inf when undefined): early stopping and checkpoints may monitor it.
        report.setdefault("value_median_rel_error", float("inf"))
        self.last_validation_report = report
        for key, value in report.items():
            if key == "value_median_rel_error" or (
                isinstance(value, float | int) and np.isfinite(value)
            ):
                self.log(f"val/{key}", float(value), on_step=False, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[TRAINING_INPUTS_KEY] = dict(self.training_inputs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.training_inputs = dict(checkpoint.get(TRAINING_INPUTS_KEY, {}))

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """Adam; the original's periodic cosine only when asked (the budget schedule is set by
        the training loop's `BudgetCosineSchedule` callback, which knows the run's budget)."""
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.typed_hparams.learning_rate,
            weight_decay=self.typed_hparams.weight_decay,
        )
        if self.typed_hparams.lr_schedule != "cosine_periodic":
            return {"optimizer": optimizer}
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.typed_hparams.t_max, eta_min=self.typed_hparams.eta_min
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
