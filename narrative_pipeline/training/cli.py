"""`narrative-pipeline train run|evaluate|export-latents`: Stage 1 training, held-out evaluation
and latent export from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StoreOpener:
    """Picklable factory opening a read-only UsGaapStore: a file path, or `ws://host:port`.

    DataLoader workers call it to open their own connection.
    """

    def __init__(self, location: str) -> None:
        self.location = location

    def __call__(self) -> Any:
        from narrative_pipeline.us_gaap_store import UsGaapStore

        if self.location.startswith("ws://"):
            from narrative_pipeline.store import DataStoreWsClient

            host, _, port = self.location.removeprefix("ws://").rstrip("/").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"store address must look like ws://HOST:PORT, got {self.location!r}"
                )
            return UsGaapStore(DataStoreWsClient(host, int(port)))
        path = Path(self.location)
        if not path.is_file():
            raise FileNotFoundError(f"store file {path} does not exist")
        from narrative_pipeline.store import DataStore

        return UsGaapStore(DataStore(str(path), read_only=True))


# TrainConfig fields offered as --options (name -> type); resume is handled separately.
CLI_FIELDS = {
    "max_epochs": int, "batch_size": int, "learning_rate": float, "loss": str,
    "latent_dim": int, "hidden_dim": int, "patience": int, "save_top_k": int,
    "num_workers": int, "seed": int, "val_fraction": float, "limit_train_batches": int,
    "accelerator": str, "torch_threads": int, "precision": str, "float32_matmul_precision": str,
    "max_time": float, "lr_schedule": str, "monitor": str, "heldout_ticker_fraction": float,
    "architecture": str,
}  # fmt: skip


def ticker_list(text: str) -> list[str]:
    """`A,B` -> ["A", "B"] (blank entries dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers: Any) -> None:
    from narrative_pipeline.training.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    group = subparsers.add_parser("train", help="Stage 1 autoencoder training and latent export")
    sub = group.add_subparsers(dest="train_command", required=True)

    run = sub.add_parser("run", help="train (or resume) the Stage 1 autoencoder")
    run.add_argument("--store", required=True, help="store file path or ws://HOST:PORT")
    run.add_argument(
        "--output-dir", required=True, help="checkpoints, TensorBoard logs, loss curve"
    )
    for name, kind in CLI_FIELDS.items():
        flag = "--" + name.replace("_", "-")
        run.add_argument(flag, type=kind, default=defaults[name], help=f"default {defaults[name]}")
    run.add_argument(
        "--resume", nargs="?", const=True, default=False,
        help="continue from OUTPUT_DIR/checkpoints/last.ckpt, or from the given .ckpt",
    )  # fmt: skip
    run.add_argument(
        "--warm-start", nargs="?", const=True, default=False,
        help="start from the weights of OUTPUT_DIR/checkpoints/last.ckpt (or the given .ckpt) "
        "when compatible; a full retrain otherwise",
    )  # fmt: skip
    run.add_argument(
        "--heldout-tickers", type=ticker_list, default=[],
        help="comma-separated tickers kept out of training (default: heldout_ticker_fraction)",
    )  # fmt: skip
    run.add_argument("--progress-bar", action="store_true")
    run.set_defaults(func=run_training)

    evaluate = sub.add_parser("evaluate", help="held-out evaluation against baselines (JSON)")
    evaluate.add_argument("--checkpoint", required=True, help="a Stage 1 .ckpt file")
    evaluate.add_argument("--store", required=True, help="store file path or ws://HOST:PORT")
    evaluate.add_argument("--out", required=True, help="evaluation.json to write")
    evaluate.add_argument(
        "--heldout-tickers", type=ticker_list, default=None,
        help="comma-separated tickers to evaluate as unseen (default: the checkpoint's own)",
    )  # fmt: skip
    evaluate.set_defaults(func=run_evaluation)

    export = sub.add_parser("export-latents", help="latent vector of every cell to a .npy file")
    export.add_argument("--checkpoint", required=True, help="a Stage 1 .ckpt file")
    export.add_argument("--store", required=True, help="store file path or ws://HOST:PORT")
    export.add_argument("--out", required=True, help="output .npy (row i = cell i)")
    export.add_argument("--device", default=None, help="cpu / cuda (default: cuda if present)")
    export.set_defaults(func=run_export)


def run_training(args: argparse.Namespace) -> int:
    from narrative_pipeline.training.config import TrainConfig
    from narrative_pipeline.training.loop import train_stage1

    options = {name: getattr(args, name) for name in CLI_FIELDS}
    config = TrainConfig(
        **options,
        resume=args.resume,
        warm_start=args.warm_start,
        heldout_tickers=args.heldout_tickers,
        progress_bar=args.progress_bar,
    )
    result = train_stage1(StoreOpener(args.store), config, args.output_dir, progress=print_progress)
    summary = {
        "best_checkpoint_path": result.best_checkpoint_path,
        "last_checkpoint_path": result.last_checkpoint_path,
        "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run,
        "tensorboard_dir": result.tensorboard_dir,
        "heldout_tickers": result.heldout_tickers,
        "warm_start": result.warm_start,
        "latent_dim": result.latent_dim,
        "configured_latent_dim": result.configured_latent_dim,
        "starting_score": result.starting_score,
        "kept_starting_state": result.kept_starting_state,
        "metrics": result.metrics,
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from narrative_pipeline.training.inference import export_latents

    n_cells = export_latents(
        args.checkpoint, StoreOpener(args.store)(), args.out, device=args.device
    )
    print(f"wrote latents of {n_cells} cells to {args.out}")
    return 0


def print_progress(line: str) -> None:
    """Per-epoch lines on stderr (stdout carries the JSON summary)."""
    print(line, file=sys.stderr, flush=True)


def run_evaluation(args: argparse.Namespace) -> int:
    from narrative_pipeline.training.evaluation import evaluate_checkpoint, evaluation_json, judge

    evaluation, _extras = evaluate_checkpoint(
        args.checkpoint, StoreOpener(args.store)(), heldout_tickers=args.heldout_tickers
    )
    evaluation["checks"] = {v.name: v.passed for v in judge(evaluation)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(evaluation_json(evaluation))
    model, latent = evaluation["model"], evaluation["latent"]
    print(
        f"wrote {out}: latent {latent['effective']} (configured {latent['configured']}, input "
        f"width {latent['input_width']}); {evaluation['headline_split']} value median rel error "
        f"{model.get('value_median_rel_error')}, cosine {model.get('embedding_cosine')}; "
        f"checks {evaluation['checks']}"
    )
    return 0
