"""`stage1_evaluation` in Dagster: materialised after training on the generated sample, with its
table, plots, evaluation.json and model checks; sensor-tagged runs warm-start."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from narrative_pipeline.assets import ALL_ASSETS, stage1_checkpoint, stage1_evaluation
from narrative_pipeline.checks import ALL_CHECKS, EVALUATION_CHECK_DESCRIPTIONS
from narrative_pipeline.definitions import training_run_config
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline_tests.test_dagster_assets import make_resources, metadata_of, run

TWO_EPOCHS = training_run_config(max_epochs=2, batch_size=256, heldout_tickers=["KO"])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    generate_sample_csvs(root / "csv", tickers=["AAPL", "KO", "MSFT"], filings_per_ticker=4)
    resources = make_resources(root)
    result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], resources=resources, run_config=TWO_EPOCHS)
    assert result.success
    return root, resources, result


@pytest.mark.slow
def test_evaluation_follows_training_with_table_plots_json_and_checks(pipeline):
    root, _, result = pipeline
    meta = metadata_of(result, stage1_evaluation)
    assert meta["heldout_tickers"] == "KO" and meta["headline_split"] == "heldout"
    table = meta["model_vs_baselines"]
    assert "| model |" in table and "baseline: pca" in table and "baseline: pair_median" in table
    assert meta["plot: value error by pair"].count("data:image/png;base64,") == 1
    assert meta["plot: latents by concept group"].count("data:image/png;base64,") == 1
    saved = json.loads((root / "data" / "training" / "evaluation.json").read_text())
    for part in (saved["model"], saved["baselines"]["pca"], saved["baselines"]["pair_median"]):
        assert {"value_median_rel_error", "value_within_1pct", "embedding_cosine"} <= set(part)
    assert saved["split"]["heldout_tickers"] == ["KO"] and saved["split"]["cells"]["heldout"] > 0
    assert saved["checkpoint"].endswith("stage1_resume.ckpt") and saved["config"]["latent_dim"]
    # The default latent (96) is wider than this sample's input: capped to a real bottleneck.
    latent = saved["latent"]
    assert latent["configured"] == 96 and latent["capped"] is True
    assert latent["effective"] == int(0.8 * latent["input_width"]) < latent["input_width"]
    assert meta["latent_dim"] == latent["effective"] and meta["configured_latent_dim"] == 96
    trained = metadata_of(result, stage1_checkpoint)
    assert (trained["latent_dim"], trained["configured_latent_dim"]) == (latent["effective"], 96)
    assert isinstance(trained["kept_starting_state"], bool)
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == stage1_evaluation.key
    }
    assert set(checks) == set(EVALUATION_CHECK_DESCRIPTIONS)
    assert checks["finite_outputs"] and checks["unit_norm_latents"]
    assert metadata_of(result, stage1_checkpoint)["heldout_tickers"] == "KO"


@pytest.mark.slow
def test_sensor_runs_warm_start_with_a_bounded_budget(pipeline):
    _, resources, _ = pipeline
    config = training_run_config(max_epochs=50, warm_max_epochs=1, heldout_tickers=["KO"])
    result = run(
        [stage1_checkpoint], resources, config, tags={"narrative/trigger": "csv_folder_sensor"}
    )
    meta = metadata_of(result, stage1_checkpoint)
    assert meta["warm_start_requested"] is True
    assert meta["warm_start"].startswith("warm start from")
    assert meta["epochs_run"] == 1 and meta["train_config"]["max_epochs"] == 1
    manual = metadata_of(run([stage1_checkpoint], resources, TWO_EPOCHS), stage1_checkpoint)
    assert manual["warm_start_requested"] is False and manual["epochs_run"] == 2
    assert manual["warm_start"].startswith("full training")
