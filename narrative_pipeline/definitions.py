"""The Dagster code location: `defs`, loaded by workspace.yaml and `dagster dev`.

Assets: raw_records -> concept_unit_pairs -> embeddings / scalers -> pca_model -> triplets ->
stage1_checkpoint. With no environment set everything lives under ./data (SQLite database,
embedded simd-r-drive store, checkpoints, plots) and an empty CSV folder gets a generated sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from narrative_pipeline.assets import ALL_ASSETS
from narrative_pipeline.assets.metadata import figure_text
from narrative_pipeline.checks import ALL_CHECKS
from narrative_pipeline.resources import default_resources
from narrative_pipeline.schedules import daily_ingestion_sweep
from narrative_pipeline.sensors import csv_folder_sensor

ASSET_KEYS = [asset.key.to_user_string() for asset in ALL_ASSETS]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    sensors=[csv_folder_sensor],
    schedules=[daily_ingestion_sweep],
    resources=default_resources(),
)


def training_run_config(**overrides: Any) -> dict[str, Any]:
    """Run config setting fields of the stage1_checkpoint training Config (e.g. max_epochs=1)."""
    return {"ops": {"stage1_checkpoint": {"config": overrides}}} if overrides else {}


def materialize_all(
    max_epochs: int | None = None,
    resources: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Materialise every asset and run every check in-process; one summary line per event.

    Used by `narrative-pipeline demo`; equivalent to "Materialize all" in the UI.
    """
    config = dict(run_config or {})
    if max_epochs is not None and not config:
        config = training_run_config(max_epochs=max_epochs)
    result = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        resources=dict(resources) if resources is not None else default_resources(),
        run_config=config,
    )
    return summarize(result)


def summarize(result: dg.ExecuteInProcessResult) -> list[str]:
    """Readable lines: each asset with its main figures, each check with pass/fail."""
    lines = []
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        figures = ", ".join(
            f"{k}={figure_text(v.value)}"
            for k, v in materialization.metadata.items()
            if isinstance(v.value, int | float) and not isinstance(v.value, bool)
        )
        lines.append(f"{materialization.asset_key.to_user_string()}: {figures}")
    for evaluation in result.get_asset_check_evaluations():
        status = "passed" if evaluation.passed else "FAILED"
        lines.append(
            f"check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {status}"
        )
    lines.append("run " + ("succeeded" if result.success else "FAILED"))
    return lines
