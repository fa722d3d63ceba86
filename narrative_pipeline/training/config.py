"""Training settings, validated up front so a bad value fails before any data is read.

Field names match the Dagster `Config` of the `stage1_checkpoint` asset, which wraps this class.
Defaults follow the original where it was right (patience 20, save_top_k 1, clip 0.5); the batch
is larger (1024 vs 64) with a matching larger learning rate, since the streaming loader can feed
it. Where the original misled (issue 11) the defaults changed, with its knobs kept:
- the learning rate follows ONE cosine decay over the run's budget (`lr_schedule="budget"`:
  the larger of epochs done / max_epochs and time used / max_time), never restarting mid-run;
  the original's `CosineAnnealingLR(T_max=15)` oscillation is `lr_schedule="cosine_periodic"`;
- early stopping and the "best" checkpoint follow the validation value median relative error
  in original units (`monitor`), which reflects typical cells; `val_loss_epoch` (MSE, dominated
  by a handful of extreme cells) stays available;
- whole tickers are held out of training (`heldout_tickers` / `heldout_ticker_fraction`) so the
  evaluation can measure companies the model never saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

# Literal types so the model and Lightning see the checked values (validated in __post_init__).
LossName = Literal["mse", "l1", "huber"]
Precision = Literal["32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true"]
LOSSES: tuple[LossName, ...] = get_args(LossName)
ARCHITECTURES = ("pca_residual", "mlp")
LR_SCHEDULES = ("budget", "cosine_periodic", "constant")
MONITORS = ("auto", "val/value_median_rel_error", "val/embedding_loss", "val_loss_epoch")
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
MATMUL_PRECISIONS = ("highest", "high", "medium")
# A configured latent_dim not below the model's input width is capped to this share of the width
# (rounded down): at or above the width there is no bottleneck, the model and a same-size PCA are
# both the identity, and the evaluation cannot tell a useful latent from a copy. 0.8: the default
# latent 96 is 0.8 of the shared data's 120-wide input, the size the held-out evaluation chose
# (benchmarks/RESULTS.md "Model quality", Wave 3, also for the generated sample's 32 -> 25).
BOTTLENECK_FRACTION = 0.8


@dataclass
class TrainConfig:
    max_epochs: int = 200
    # Wall-clock budget of one run in seconds (None: no limit); stops after the current batch.
    max_time: float | None = None
    batch_size: int = 1024
    # 1e-4: the zero-initialised residuals of pca_residual generalise best with small steps
    # (held-out cosine at latent 32, 40 s: 0.945 at 1e-4, 0.918 at 3e-4, 0.897 at 1e-3, below
    # PCA at 3e-3; benchmarks/RESULTS.md "Model quality"). The MLP alone was tuned at 1e-3.
    learning_rate: float = 1e-4
    weight_decay: float = 5.2e-7
    loss: LossName = "mse"
    # 96: the smallest swept size whose held-out cosine meets 0.99 (PCA-96: 0.991). At or above
    # the input width there is no bottleneck: the run then uses `effective_latent_dim` (logged,
    # and saved as latent_dim next to configured_latent_dim in the checkpoint).
    latent_dim: int = 96
    hidden_dim: int = 512
    n_hidden_layers: int = 2
    dropout: float = 0.0
    embedding_weight: float = 1.0
    value_weight: float = 1.0
    lr_schedule: str = "budget"
    # "pca_residual": a frozen PCA path fitted on the training cells + zero-initialised MLP
    # residuals (starts as the same-size PCA autoencoder); "mlp": the MLP alone (first design).
    architecture: str = "pca_residual"
    # pca_residual only: the value output stays the PCA path's (residuals shape the embedding).
    linear_value: bool = True
    t_max: int = 15  # period of lr_schedule="cosine_periodic" (the original's schedule)
    eta_min: float = 1e-6
    gradient_clip_val: float = 0.5
    # "auto": val/embedding_loss when the value output is the frozen linear path's (pca_residual
    # with linear_value: its value error cannot move, so it cannot pick the best epoch), else
    # val/value_median_rel_error. Lower is better for every monitor.
    monitor: str = "auto"
    patience: int = 20
    min_delta: float = 0.0
    save_top_k: int = 1
    # False: start fresh; True: continue from <output_dir>/checkpoints/last.ckpt; str: that file.
    resume: bool | str = False
    # Start from the weights (not the optimizer or epoch count) of a previous checkpoint with a
    # fresh budget. True: <output_dir>/checkpoints/stage1_resume.ckpt (the previous best; else
    # last.ckpt) when compatible (same weight shapes and the same PCA embeddings of the pairs
    # both know), else a full retrain; str: that file. Those weights are the warm run's starting
    # state: it stays the best checkpoint unless a trained epoch beats it.
    warm_start: bool | str = False
    # Tickers whose cells never enter training (evaluated as unseen companies). Empty: the
    # tickers whose stable hash is below heldout_ticker_fraction (at least one when > 0).
    heldout_tickers: list[str] = field(default_factory=list)
    heldout_ticker_fraction: float = 0.2
    num_workers: int = 0
    seed: int = 0
    val_fraction: float = 0.1
    internal_batch_size: int = 65536
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    accelerator: str = "auto"
    # Several GPUs: devices=N with strategy="ddp_spawn" inside a Dagster step (plain "ddp" re-runs
    # the whole step per GPU); num_nodes>1 under torchrun. See docs/DEPLOYMENT.md.
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    deterministic: bool = True
    progress_bar: bool = False
    # torch intra-op threads for CPU training (None: torch's default). 1 is often fastest on a
    # small shared machine, where spinning threads contend (see benchmarks/RESULTS.md).
    torch_threads: int | None = None
    # Lightning's `precision` ("32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true") and
    # torch's float32 matmul precision ("highest", "high": TF32 on NVIDIA tensor cores,
    # "medium"). The defaults are exact float32. On an H200 the default model trained no
    # faster with bf16 or TF32 (it is fed by the loader, not bound by matmuls; see
    # benchmarks/RESULTS.md); wider models may gain.
    precision: Precision = "32-true"
    float32_matmul_precision: str = "highest"

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "latent_dim", "hidden_dim", "t_max"):
            _require(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 1, ">= 1")
        _require("n_hidden_layers", self.n_hidden_layers, lambda v: v >= 1, ">= 1")
        _require("internal_batch_size", self.internal_batch_size, lambda v: v >= 1, ">= 1")
        for name in ("learning_rate",):
            _require(name, getattr(self, name), lambda v: v > 0, "> 0")
        for name in ("weight_decay", "eta_min", "gradient_clip_val", "min_delta"):
            _require(name, getattr(self, name), lambda v: v >= 0, ">= 0")
        for name in ("embedding_weight", "value_weight"):
            _require(name, getattr(self, name), lambda v: v >= 0, ">= 0")
        if self.embedding_weight + self.value_weight <= 0:
            raise ValueError("embedding_weight + value_weight must be > 0")
        _require("dropout", self.dropout, lambda v: 0 <= v < 1, "in [0, 1)")
        _require("loss", self.loss, lambda v: v in LOSSES, f"one of {LOSSES}")
        _require(
            "architecture", self.architecture, lambda v: v in ARCHITECTURES, str(ARCHITECTURES)
        )
        _require("lr_schedule", self.lr_schedule, lambda v: v in LR_SCHEDULES, str(LR_SCHEDULES))
        _require("monitor", self.monitor, lambda v: v in MONITORS, f"one of {MONITORS}")
        _require("max_time", self.max_time, lambda v: v is None or v > 0, "> 0 or None")
        _require(
            "heldout_ticker_fraction", self.heldout_ticker_fraction, lambda v: 0 <= v < 1, "[0, 1)"
        )
        self.heldout_tickers = [str(t).strip() for t in self.heldout_tickers if str(t).strip()]
        _require("patience", self.patience, lambda v: v >= 0, ">= 0")
        _require("save_top_k", self.save_top_k, lambda v: v >= -1, ">= -1 (-1 keeps all)")
        _require("devices", self.devices, lambda v: isinstance(v, int) and v >= 1, ">= 1")
        _require("num_nodes", self.num_nodes, lambda v: isinstance(v, int) and v >= 1, ">= 1")
        _require("num_workers", self.num_workers, lambda v: v >= 0, ">= 0")
        _require("val_fraction", self.val_fraction, lambda v: 0 < v < 1, "in (0, 1)")
        _require("torch_threads", self.torch_threads, lambda v: v is None or v >= 1, ">= 1 or None")
        _require("precision", self.precision, lambda v: v in PRECISIONS, f"one of {PRECISIONS}")
        _require(
            "float32_matmul_precision",
            self.float32_matmul_precision,
            lambda v: v in MATMUL_PRECISIONS,
            f"one of {MATMUL_PRECISIONS}",
        )
        for name in ("limit_train_batches", "limit_val_batches"):
            _require(name, getattr(self, name), lambda v: v is None or v > 0, "> 0 or None")
        if self.resume == "":  # an empty launchpad field means "do not resume"
            self.resume = False
        if isinstance(self.resume, str) and not Path(self.resume).is_file():
            raise ValueError(f"resume: checkpoint file {self.resume!r} does not exist")
        if self.warm_start == "":
            self.warm_start = False
        if isinstance(self.warm_start, str) and not Path(self.warm_start).is_file():
            raise ValueError(f"warm_start: checkpoint file {self.warm_start!r} does not exist")
        if self.resume is not False and self.warm_start is not False:
            raise ValueError("resume and warm_start exclude each other: pick one")

    @property
    def monitor_metric(self) -> str:
        """The logged metric early stopping and the best checkpoint follow (`monitor` resolved)."""
        if self.monitor != "auto":
            return self.monitor
        if self.architecture == "pca_residual" and self.linear_value:
            return "val/embedding_loss"
        return "val/value_median_rel_error"

    def effective_latent_dim(self, input_width: int) -> int:
        """`latent_dim`, or BOTTLENECK_FRACTION of `input_width` when it is not below the width
        (at least the architecture's minimum: 2 for pca_residual's code + lift, else 1)."""
        if self.latent_dim < input_width:
            return self.latent_dim
        smallest = 2 if self.architecture == "pca_residual" else 1
        return max(smallest, int(BOTTLENECK_FRACTION * input_width))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require(name: str, value: Any, ok: Any, expectation: str) -> None:
    try:
        valid = bool(ok(value))
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"TrainConfig.{name} must be {expectation}, got {value!r}")
