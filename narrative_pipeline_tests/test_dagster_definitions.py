"""The code location as the UI sees it: keys, dependencies, groups, kinds, GPU tags, resources."""

import json

import dagster as dg
import pytest

from narrative_pipeline.definitions import ASSET_KEYS, defs
from narrative_pipeline.resources import (
    DatabaseResource,
    EmbeddingModelResource,
    PathsResource,
    StoreResource,
)


@pytest.fixture(scope="module")
def graph():
    return defs.get_repository_def().asset_graph


def _deps(graph, key):
    return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}


def test_asset_chain_and_direct_dependencies(graph):
    """A strict chain (each step writes the single-writer store), plus direct data dependencies."""
    assert ASSET_KEYS == [
        "raw_records",
        "concept_unit_pairs",
        "embeddings",
        "scalers",
        "pca_model",
        "triplets",
        "stage1_checkpoint",
        "stage1_evaluation",
    ]
    assert _deps(graph, "raw_records") == set()
    assert _deps(graph, "concept_unit_pairs") == {"raw_records"}
    assert _deps(graph, "embeddings") == {"concept_unit_pairs"}
    assert _deps(graph, "scalers") == {"embeddings", "concept_unit_pairs"}
    assert _deps(graph, "pca_model") == {"embeddings", "scalers"}
    assert _deps(graph, "triplets") == {"pca_model", "scalers", "raw_records"}
    assert _deps(graph, "stage1_checkpoint") == {"triplets", "pca_model", "scalers"}


def test_groups_descriptions_and_kinds(graph):
    groups = {key: graph.get(dg.AssetKey(key)).group_name for key in ASSET_KEYS}
    assert groups["raw_records"] == "ingestion"
    assert groups["stage1_checkpoint"] == "training"
    assert {groups[k] for k in ASSET_KEYS[1:6]} == {"preprocessing"}
    for key in ASSET_KEYS:
        node = graph.get(dg.AssetKey(key))
        assert node.description and len(node.description) > 30, key
        assert "python" in node.kinds, key
    assert graph.get(dg.AssetKey("raw_records")).kinds & {"sqlite", "mysql"}
    assert "pytorch" in graph.get(dg.AssetKey("stage1_checkpoint")).kinds


def test_training_is_gpu_tagged_and_pooled():
    assets = {a.key.to_user_string(): a for a in defs.assets}
    training = assets["stage1_checkpoint"]
    op = training.op
    limits = json.loads(op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": 1}
    assert op.pool == "gpu"
    # Nothing else asks for a GPU.
    for key, asset in assets.items():
        if key != "stage1_checkpoint":
            assert "dagster-k8s/config" not in asset.op.tags, key
            assert asset.op.pool is None, key


def test_training_config_exposes_the_knobs():
    from narrative_pipeline.assets.training import Stage1TrainingConfig

    fields = set(Stage1TrainingConfig.model_fields)
    assert {
        "max_epochs",
        "batch_size",
        "learning_rate",
        "loss",
        "latent_dim",
        "architecture",
        "patience",
        "resume",
    } <= fields
    config = Stage1TrainingConfig(max_epochs=2, loss="l1").to_train_config()
    assert config.max_epochs == 2 and config.loss == "l1"
    assert config.architecture == "pca_residual" and config.monitor_metric == "val/embedding_loss"
    mlp = Stage1TrainingConfig(architecture="mlp").to_train_config()
    assert mlp.monitor_metric == "val/value_median_rel_error"
    with pytest.raises(ValueError, match="loss"):
        Stage1TrainingConfig(loss="cauchy").to_train_config()


def test_resources_sensor_schedule_checks_registered():
    repo = defs.get_repository_def()
    assert set(repo.get_top_level_resources()) == {"paths", "database", "store", "embedding_model"}
    assert [s.name for s in repo.sensor_defs] == ["csv_folder_sensor"]
    assert [s.name for s in repo.schedule_defs] == ["daily_ingestion_sweep"]
    check_keys = repo.asset_graph.asset_check_keys
    assert {k.name for k in check_keys} == {
        "scaler_round_trip_exact",
        "triplets_are_finite",
        "triplet_count_matches_facts",
        "every_pair_has_embedding_and_scaler",
        "pca_keeps_configured_variance",
        "finite_outputs",
        "unit_norm_latents",
        "beats_pair_median_on_heldout_tickers",
        "not_worse_than_same_size_pca_on_both",
    }


def test_resource_defaults_follow_the_environment(monkeypatch, tmp_path):
    for name in (
        "NARRATIVE_DATA_DIR",
        "NARRATIVE_CSV_DIR",
        "NARRATIVE_DB_URL",
        "MYSQL_HOST",
        "SIMD_R_DRIVE_SERVER_HOST",
        "SIMD_R_DRIVE_SERVER_PORT",
        "NARRATIVE_EMBEDDING_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    assert PathsResource().data_path.as_posix() == "data"
    assert PathsResource().csv_path.as_posix() == "data/csv"
    assert StoreResource().server_address() is None
    assert StoreResource().embedded_path().as_posix() == "data/narrative_store.bin"
    assert EmbeddingModelResource().model_name_or_path() is None

    monkeypatch.setenv("NARRATIVE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("NARRATIVE_CSV_DIR", str(tmp_path / "in"))
    assert PathsResource().csv_path == tmp_path / "in"
    assert DatabaseResource().resolved_url() == f"sqlite:///{tmp_path / 'd' / 'narrative.sqlite'}"
    assert StoreResource().embedded_path() == tmp_path / "d" / "narrative_store.bin"

    monkeypatch.setenv("SIMD_R_DRIVE_SERVER_HOST", "store.internal")
    monkeypatch.setenv("SIMD_R_DRIVE_SERVER_PORT", "34129")
    assert StoreResource().server_address() == ("store.internal", 34129)
    assert StoreResource(path=str(tmp_path / "s.bin")).server_address() is None  # explicit wins
    assert (
        "ws://store.internal:34129 (official client)" in StoreResource(client="official").describe()
    )

    monkeypatch.setenv("NARRATIVE_DB_URL", "mysql+pymysql://u:secret@db:3306/n")
    assert DatabaseResource().describe() == "mysql+pymysql://u:***@db:3306/n"
    monkeypatch.setenv("NARRATIVE_EMBEDDING_MODEL", "/models/bge")
    assert EmbeddingModelResource().model_name_or_path() == "/models/bge"


def test_server_without_port_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SIMD_R_DRIVE_SERVER_PORT", raising=False)
    with pytest.raises(ValueError, match="SIMD_R_DRIVE_SERVER_PORT"):
        StoreResource(host="localhost").server_address()
    with pytest.raises(ValueError, match="'ours' or 'official'"):
        StoreResource(host="localhost", port=1, client="theirs").connect()
