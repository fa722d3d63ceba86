"""Each asset materialised with `dagster.materialize` over temporary resources (a temp SQLite file,
an embedded store in a temp folder), asserting on what it stored and the metadata it reported.
"""

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from narrative_pipeline import checks
from narrative_pipeline.assets import (
    ALL_ASSETS,
    concept_unit_pairs,
    embeddings,
    pca_model,
    raw_records,
    scalers,
    stage1_checkpoint,
    triplets,
)
from narrative_pipeline.checks import ALL_CHECKS
from narrative_pipeline.definitions import materialize_all, training_run_config
from narrative_pipeline.resources import (
    DatabaseResource,
    EmbeddingModelResource,
    PathsResource,
    StoreResource,
)
from narrative_pipeline.sample_data import generate_sample_csvs

ONE_EPOCH = training_run_config(max_epochs=1, batch_size=256)


def make_resources(root):
    return {
        "paths": PathsResource(data_dir=str(root / "data"), csv_dir=str(root / "csv")),
        "database": DatabaseResource(url=f"sqlite:///{root / 'facts.sqlite'}"),
        "store": StoreResource(path=str(root / "store.bin")),
        "embedding_model": EmbeddingModelResource(),
    }


def run(assets, resources, run_config=None, **kwargs):
    """Materialise `assets` (checks on them included); upstream data comes from the store/db."""
    return dg.materialize(
        [*assets, *ALL_CHECKS],
        selection=dg.AssetSelection.assets(*assets).without_checks()
        | dg.AssetSelection.checks_for_assets(*assets),
        resources=resources,
        run_config=run_config or {},
        **kwargs,
    )


def metadata_of(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == asset.key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_results(result):
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def open_db(resources):
    return resources["database"].get_db()


@pytest.fixture
def sample(tmp_path):
    resources = make_resources(tmp_path)
    generate_sample_csvs(tmp_path / "csv", tickers=["AAPL", "KO"], filings_per_ticker=4)
    return tmp_path, resources


@pytest.mark.slow
def test_each_asset_alone_in_order(sample):
    root, resources = sample

    meta = metadata_of(run([raw_records], resources), raw_records)
    facts = open_db(resources).fact_count()
    assert meta["csv_files"] == 2 and meta["files_loaded"] == 2
    assert meta["facts_in_database"] == facts > 2 * 4 * 30
    assert meta["tickers"] == ["AAPL", "KO"]
    assert meta["sample_generated"] is False
    assert "| AAPL |" in meta["preview"] and "ingest_seconds" in meta

    meta = metadata_of(run([concept_unit_pairs], resources), concept_unit_pairs)
    assert meta["n_cells"] == facts
    assert 40 <= meta["n_pairs"] <= 60
    assert "AccountsPayableCurrent" in meta["preview"]

    meta = metadata_of(run([embeddings], resources), embeddings)
    assert meta["dim"] == 384 and meta["n_pairs"] == meta["embedded"] + meta["cache_hits"]

    meta = metadata_of(run([scalers], resources), scalers)
    assert meta["kind"] == "robust" and meta["n_pairs"] >= 40

    result = run([pca_model], resources)
    meta = metadata_of(result, pca_model)
    assert meta["explained_variance"] >= 0.95 and 1 <= meta["n_components"] <= 384
    assert meta["plot: explained variance"].count("data:image/png;base64,") == 1
    assert (root / "data" / "plots").is_dir() and list((root / "data" / "plots").glob("*.png"))
    assert check_results(result) == {"pca_keeps_configured_variance": True}

    result = run([triplets], resources)
    meta = metadata_of(result, triplets)
    assert meta["n_triplets"] == meta["triplets"] == facts
    assert meta["preview"].count("\n") == 2 + 9  # header, rule, 10 rows
    assert check_results(result) == {
        "scaler_round_trip_exact": True,
        "triplets_are_finite": True,
        "triplet_count_matches_facts": True,
        "every_pair_has_embedding_and_scaler": True,
    }

    meta = metadata_of(run([stage1_checkpoint], resources, ONE_EPOCH), stage1_checkpoint)
    checkpoint = meta["checkpoint_path"]
    assert checkpoint.endswith(".ckpt") and (root / "data" / "training").is_dir()
    assert Path(checkpoint).is_file()
    assert meta["train_config"]["max_epochs"] == 1
    assert np.isfinite(meta["best_val_loss"])
    assert "data:image/png;base64," in meta["loss_curve"]
    assert "data:image/svg+xml;base64," in meta["loss_per_epoch"]  # shown without a click


@pytest.mark.slow
def test_reingestion_is_incremental_and_downstream_follows(sample):
    root, resources = sample
    assert materialize_all(resources=resources, max_epochs=1)[-1] == "run succeeded"
    facts_before = open_db(resources).fact_count()

    meta = metadata_of(run([raw_records], resources), raw_records)
    assert meta["files_unchanged"] == 2 and meta["files_loaded"] == 0
    assert open_db(resources).fact_count() == facts_before

    generate_sample_csvs(root / "csv", tickers=["KO"], filings_per_ticker=2)  # KO changed
    generate_sample_csvs(root / "csv", tickers=["NVDA"], filings_per_ticker=3)  # new file
    meta = metadata_of(run([raw_records], resources), raw_records)
    # KO lost filings it supplied before: held back (stored data kept), reported as failed.
    assert meta["files_loaded"] == 1 and meta["files_unchanged"] == 1 and meta["failed_files"] == 1
    assert "KO.csv" in meta["failed_files_table"] and "would drop" in meta["failed_files_table"]
    shrink = {"ops": {"raw_records": {"config": {"allow_shrink": True}}}}
    meta = metadata_of(run([raw_records], resources, shrink), raw_records)
    assert meta["files_loaded"] == 1 and meta["failed_files"] == 0  # replaced deliberately
    facts_after = open_db(resources).fact_count()
    assert facts_after != facts_before
    assert sorted(meta["tickers"]) == ["AAPL", "KO", "NVDA"]

    # Before the downstream assets recompute, the store is behind the database: the check says so.
    result = dg.materialize(
        [triplets, *ALL_CHECKS],
        selection=dg.AssetSelection.checks(checks.triplet_count_matches_facts),
        resources=resources,
        raise_on_error=False,
    )
    assert check_results(result) == {"triplet_count_matches_facts": False}

    downstream = [concept_unit_pairs, embeddings, scalers, pca_model, triplets]
    result = run(downstream, resources)
    assert result.success and all(check_results(result).values())
    assert metadata_of(result, triplets)["n_triplets"] == facts_after
    assert metadata_of(result, embeddings)["embedded"] == 0  # all texts came from the cache


def test_a_failed_file_is_listed_not_loaded_and_keeps_the_data(sample):
    root, resources = sample
    metadata_of(run([raw_records], resources), raw_records)
    before = open_db(resources).facts_frame().values.tolist()
    ko = root / "csv" / "KO.csv"
    ko.write_text(ko.read_text()[:-20])  # cut mid-way
    meta = metadata_of(run([raw_records], resources), raw_records)
    assert meta["files_loaded"] == 0 and meta["failed_files"] == 1
    assert "KO.csv" in meta["failed_files_table"] and "torn line" in meta["failed_files_table"]
    assert open_db(resources).facts_frame().values.tolist() == before


def test_empty_landing_folder_gets_the_generated_sample(tmp_path):
    resources = make_resources(tmp_path)
    meta = metadata_of(run([raw_records], resources), raw_records)
    assert meta["sample_generated"] is True
    assert meta["csv_files"] == 6 == meta["files_loaded"]
    assert len(meta["tickers"]) == 6


def test_no_csv_and_no_sample_fails_clearly(tmp_path):
    resources = make_resources(tmp_path)
    result = run(
        [raw_records],
        resources,
        {"ops": {"raw_records": {"config": {"generate_sample_when_empty": False}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert "no CSV files in" in str(result.all_events)


@pytest.mark.slow
def test_failing_blocking_check_stops_training(sample, monkeypatch):
    root, resources = sample
    upstream = [raw_records, concept_unit_pairs, embeddings, scalers, pca_model]
    assert run(upstream, resources).success

    def crafted_failure(us_gaap_store, chunk=checks.FINITE_CHUNK):
        return dg.AssetCheckResult(passed=False, metadata={"non_finite_scaled": 1})

    monkeypatch.setattr(checks, "evaluate_triplets_finite", crafted_failure)
    result = run([triplets, stage1_checkpoint], resources, ONE_EPOCH, raise_on_error=False)
    assert check_results(result)["triplets_are_finite"] is False
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"triplets"}  # training never ran on the suspect triplets
    assert not (root / "data" / "training" / "checkpoints").exists()


@pytest.mark.slow
def test_whole_graph_on_the_real_csvs(shared_data, tmp_path):
    shutil.copytree(shared_data / "sec-fetcher-csvs", tmp_path / "csv")
    resources = make_resources(tmp_path)
    result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], resources=resources, run_config=ONE_EPOCH)
    assert result.success
    assert all(check_results(result).values()) and len(check_results(result)) == 5
    ingest = metadata_of(result, raw_records)
    assert ingest["files_loaded"] == 4 and ingest["sample_generated"] is False
    facts = open_db(resources).fact_count()
    assert metadata_of(result, triplets)["n_triplets"] == facts > 5000
    assert metadata_of(result, stage1_checkpoint)["epochs_run"] >= 0
