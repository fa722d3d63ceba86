"""What training costs in a CPU "Materialize all" on the generated sample, and in the run the CSV
sensor starts after one changed CSV (issue 11: <= 2 minutes; a bounded warm run that says so).

1. Generates the sample (6 tickers, as `make demo`) into --workdir and materialises every asset
   and check in-process with the launchpad's DEFAULT config (no overrides), on an ephemeral
   Dagster instance;
2. in a second folder, materialises the sample without one ticker (--new-ticker, XOM), then
   drops that ticker's CSV in (one new file, as a user would) and materialises the graph again
   tagged as the sensor tags its runs (`narrative/trigger=csv_folder_sensor`), so
   `stage1_checkpoint` takes the warm budget. (A rewritten sample CSV is no "changed" file: the
   generator renumbers filings, and ingestion holds back a file that drops filings.)

Prints, per run: training seconds, epochs, whether time stopped it, warm start, latent sizes,
the starting-state selection, the model checks, and the stage1_checkpoint log lines.
Run: `.venv/bin/python benchmarks/bench_materialize_training.py [--workdir DIR]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from narrative_pipeline.assets import ALL_ASSETS, stage1_checkpoint  # noqa: E402
from narrative_pipeline.checks import ALL_CHECKS  # noqa: E402
from narrative_pipeline.resources import (  # noqa: E402
    DatabaseResource,
    EmbeddingModelResource,
    PathsResource,
    StoreResource,
)
from narrative_pipeline.sample_data import COMPANIES, generate_sample_csvs  # noqa: E402

FIGURES = ("training_seconds", "epochs_run", "latent_dim", "configured_latent_dim",
           "starting_score", "best_val_loss", "kept_starting_state", "warm_start",
           "warm_start_requested")  # fmt: skip


def resources(root: Path) -> dict:
    return {
        "paths": PathsResource(data_dir=str(root / "data"), csv_dir=str(root / "csv")),
        "database": DatabaseResource(url=f"sqlite:///{root / 'facts.sqlite'}"),
        "store": StoreResource(path=str(root / "store.bin")),
        "embedding_model": EmbeddingModelResource(),
    }


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.get_asset_materialization_events()
    [event] = [e for e in events if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def materialize(root: Path, tags: dict[str, str]) -> dict:
    """Every asset and check with the default config; stage1_checkpoint's figures and log."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS], resources=resources(root), instance=instance, tags=tags
    )
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == stage1_checkpoint.key
    ]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    raw, cells = metadata_of(result, "raw_records"), metadata_of(result, "triplets")
    logs = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if not entry.is_dagster_event and entry.step_key == "stage1_checkpoint"
    ]
    return {
        "success": result.success,
        "facts_written": raw.get("facts_written"),
        "n_cells": cells.get("n_triplets"),
        **{k: meta.get(k) for k in FIGURES},
        "stopped_for_time": meta.get("metrics", {}).get("stopped_for_time"),
        "train_config": {k: meta["train_config"][k] for k in ("max_epochs", "max_time")},
        "model_checks": {
            e.check_name: e.passed
            for e in result.get_asset_check_evaluations()
            if e.asset_key.to_user_string() == "stage1_evaluation"
        },
        "log": logs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/narrative_materialize_training")
    parser.add_argument("--new-ticker", default="XOM")
    args = parser.parse_args()
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    generate_sample_csvs(root / "all" / "csv")
    runs = {"materialize_all": materialize(root / "all", {})}
    others = [c.ticker for c in COMPANIES if c.ticker != args.new_ticker]
    generate_sample_csvs(root / "grow" / "csv", tickers=others)
    runs[f"materialize_all_without_{args.new_ticker}"] = materialize(root / "grow", {})
    generate_sample_csvs(root / "grow" / "csv", tickers=[args.new_ticker])  # one new file
    runs["sensor_run_after_one_new_csv"] = materialize(
        root / "grow", {"narrative/trigger": "csv_folder_sensor"}
    )
    for name, figures in runs.items():
        print(f"== {name}")
        print(json.dumps({k: v for k, v in figures.items() if k != "log"}, indent=1))
        for line in figures["log"]:
            if not line.startswith("epoch ") or line.startswith("epoch 0/"):
                print("   log:", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
