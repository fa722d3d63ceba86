"""Stage 1 model quality on held-out tickers, against a same-size PCA (issue 11), for RESULTS.md.

Builds (once, cached under --workdir) a store from real SEC files (the sec-fetcher CSVs and
companyfacts under --data, default ../shared/data) or, when they are absent, from the generated
sample; then trains bounded runs (--max-time seconds, --max-epochs each) and evaluates every
checkpoint with `training.evaluation` (held-out tickers, original units, baselines fitted on the
same training cells):

- `sweep`: latent 8/16/32/64/128/256 at seed 0 (model vs PCA with the same latent size);
- `seeds`: the default config at seeds 0, 1, 2 (stability: the spread of the value error);
- `scaling`: RobustScaler + MSE (default), QuantileTransformer + MSE, RobustScaler + Huber;
- `original`: the original schedule and monitor (cosine_periodic T_max 15, val_loss_epoch);
- `lowepochs`: the default config stopped after 1 and 2 epochs (no time limit), seeds 0, 1, 2:
  the starting state competes for "best", so the PCA check must hold however little it trained.

- `strict_heldout`, `original_equal_epochs`: see model_quality_modes.py (epoch-bounded).

Every run uses TrainConfig's defaults (architecture, learning rate, latent for `seeds`) unless
`--architecture`, `--learning-rate` or `--default-latent` say otherwise (e.g. `--architecture mlp
--learning-rate 1e-3 --default-latent 256` for the first design).

Run: `.venv/bin/python benchmarks/bench_model_quality.py [--experiments sweep,seeds]
[--max-time 60] [--out benchmarks/out/model_quality.json] [--plot docs/images/model_quality.png]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model_quality_modes as modes  # noqa: E402

from narrative_pipeline.training import TrainConfig, train_stage1  # noqa: E402
from narrative_pipeline.training.cli import StoreOpener  # noqa: E402
from narrative_pipeline.training.evaluation import evaluate_checkpoint, judge  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LATENTS = (8, 16, 32, 64, 128, 256)
FIGURES = ("value_median_rel_error", "value_within_1pct", "embedding_cosine")


def build_store(data: Path | None, workdir: Path, scaler_kind: str) -> Path:
    """A store file of the real data (or the generated sample) with `scaler_kind` scalers."""
    from narrative_pipeline.db.database import DbUsGaap
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    path = workdir / f"{scaler_kind}.store"
    if path.is_file():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    db = DbUsGaap(f"sqlite:///{workdir / f'{scaler_kind}.sqlite'}")
    data_store = DataStore(str(path))
    store = UsGaapStore(data_store)
    if data is not None:
        store.ingest_us_gaap_csvs(data / "sec-fetcher-csvs", db, downstream=False)
        if (data / "companyfacts").is_dir():
            store.ingest_companyfacts(data / "companyfacts", db, downstream=False)
    else:
        from narrative_pipeline.sample_data import generate_sample_csvs

        generate_sample_csvs(workdir / "sample_csv")
        store.ingest_us_gaap_csvs(workdir / "sample_csv", db, downstream=False)
    store.build_from_db(db, force=True, scaler_kind=scaler_kind, make_plots=False)
    data_store.close()
    return path


def one_run(store_path: Path, out: Path, label: str, **overrides) -> dict:
    """Train one bounded run and evaluate its best checkpoint; returns the figures."""
    config = TrainConfig(**overrides)
    started = time.perf_counter()
    result = train_stage1(
        StoreOpener(str(store_path)), config, out / label, progress=lambda _: None
    )
    seconds = time.perf_counter() - started
    evaluation, _ = evaluate_checkpoint(result.best_checkpoint_path, StoreOpener(str(store_path))())
    row = {
        "label": label,
        "latent_dim": config.latent_dim,
        "architecture": config.architecture,
        "linear_value": config.linear_value,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "epochs": result.epochs_run,
        "train_seconds": round(seconds, 1),
        "split": evaluation["headline_split"],
        "heldout_tickers": evaluation["split"]["heldout_tickers"],
        "cells": evaluation["split"]["cells"],
        "checks": {v.name: v.passed for v in judge(evaluation)},
        "kept_starting_state": result.kept_starting_state,
        "configured_latent_dim": result.configured_latent_dim,
        "effective_latent_dim": result.latent_dim,
    }
    for name, figures in (
        ("model", evaluation["model"]),
        ("pca", evaluation["baselines"]["pca"]),
        ("pair_median", evaluation["baselines"]["pair_median"]),
    ):
        row[name] = {k: figures.get(k) for k in FIGURES}
    print(json.dumps(row), flush=True)
    return row


def low_epoch_runs(store: Path, runs: Path, base: dict, latent: int) -> list[dict]:
    """Default config at max_epochs 1 and 2 (no time limit), seeds 0-2 (issue 11, wave 3)."""
    fixed = {**base, "max_time": None}
    return [
        one_run(
            store,
            runs,
            f"low_e{epochs}_seed{seed}",
            latent_dim=latent,
            seed=seed,
            **{**fixed, "max_epochs": epochs},
        )  # fmt: skip
        for epochs in (1, 2)
        for seed in (0, 1, 2)
    ]


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = sorted(rows, key=lambda r: r["latent_dim"])
    latents = [r["latent_dim"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for name, style in (("model", "o-"), ("pca", "s--")):
        left.plot(latents, [r[name]["value_median_rel_error"] for r in rows], style, label=name)
        right.plot(latents, [r[name]["embedding_cosine"] for r in rows], style, label=name)
    left.plot(latents, [r["pair_median"]["value_median_rel_error"] for r in rows], ":",
              label="per-pair median")  # fmt: skip
    for ax, title in ((left, "value median relative error"), (right, "embedding cosine")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent size")
        ax.set_title(f"{title} (held-out tickers)")
        ax.legend()
    left.set_yscale("log")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED), help="folder with sec-fetcher-csvs/")
    parser.add_argument("--workdir", default="/tmp/narrative_model_quality")
    parser.add_argument("--experiments", default="sweep,seeds,scaling,original")
    parser.add_argument("--latents", default=",".join(map(str, LATENTS)))
    parser.add_argument("--default-latent", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--scaler", default="robust", choices=("robust", "quantile"),
                        help="scalers of the store the sweep and the seeds train on")  # fmt: skip
    parser.add_argument("--architecture", default=None, help="default: TrainConfig's")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: TrainConfig's")
    parser.add_argument("--max-time", type=float, default=60.0, help="seconds per training run")
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "model_quality.json"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "images" / "model_quality.png"))
    modes.add_arguments(parser)
    args = parser.parse_args()

    data = Path(args.data) if (Path(args.data) / "sec-fetcher-csvs").is_dir() else None
    workdir = Path(args.workdir)
    base = dict(max_time=args.max_time, max_epochs=args.max_epochs,
                accelerator=args.accelerator, torch_threads=args.torch_threads,
                architecture=args.architecture or TrainConfig().architecture,
                learning_rate=args.learning_rate or TrainConfig().learning_rate)  # fmt: skip
    default_latent = args.default_latent or TrainConfig().latent_dim
    robust = build_store(data, workdir, "robust")
    chosen = build_store(data, workdir, args.scaler)
    runs = workdir / "runs"
    experiments = set(args.experiments.split(","))
    results: dict = {"data": str(data) if data else "generated sample", "host": platform.node(),
                     "scaler": args.scaler, "base": base, "runs": {}}  # fmt: skip
    if "sweep" in experiments:
        results["runs"]["sweep"] = [
            one_run(chosen, runs, f"sweep_{args.scaler}_latent{k}", latent_dim=k, **base)
            for k in map(int, args.latents.split(","))
        ]
        plot_sweep(results["runs"]["sweep"], Path(args.plot))
    if "seeds" in experiments:
        results["runs"]["seeds"] = [
            one_run(
                chosen, runs, f"{args.scaler}_seed{s}", latent_dim=default_latent, seed=s, **base
            )
            for s in (0, 1, 2)
        ]
    if "scaling" in experiments:
        quantile = build_store(data, workdir, "quantile")
        results["runs"]["scaling"] = [
            one_run(robust, runs, "robust_mse", latent_dim=default_latent, **base),
            one_run(quantile, runs, "quantile_mse", latent_dim=default_latent, **base),
            one_run(robust, runs, "robust_huber", latent_dim=default_latent, loss="huber", **base),
        ]
    if "lowepochs" in experiments:
        results["runs"]["lowepochs"] = low_epoch_runs(chosen, runs, base, default_latent)
    if "original" in experiments:
        results["runs"]["original"] = [
            one_run(
                robust,
                runs,
                "original_schedule",
                latent_dim=default_latent,
                lr_schedule="cosine_periodic",
                monitor="val_loss_epoch",
                **base,
            )  # fmt: skip
        ]
    modes.run_selected(experiments, args, data, workdir, robust, results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
