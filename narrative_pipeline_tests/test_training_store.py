"""Training against the real UsGaapStore over a real store file: workers, encode, CLI, real CSVs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from narrative_pipeline.cli import main as cli_main
from narrative_pipeline.training import IterableConceptValueDataset, TrainConfig, train_stage1
from narrative_pipeline.training.cli import StoreOpener
from narrative_pipeline.training.dataset import split_mask
from narrative_pipeline.training.inference import encode
from narrative_pipeline_tests.test_us_gaap_store_fakes import CountingEmbedder, sqlite_facts_db

TINY = dict(
    batch_size=128, learning_rate=3e-3, latent_dim=8, hidden_dim=32, internal_batch_size=512,
    val_fraction=0.2, seed=1,
)  # fmt: skip


def generated_facts(n_filings: int = 60, n_concepts: int = 40, seed: int = 0) -> pd.DataFrame:
    """About n_filings * n_concepts * 0.7 facts, each concept on its own scale."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_filings):
        for c in range(n_concepts):
            if rng.random() < 0.7:
                value = float(np.round(rng.lognormal(8 + c % 6, 1.0)))
                rows.append((f"T{f % 5}", f"{f:010d}-24-000001", f"Concept{c:03d}", "USD", value))
    return pd.DataFrame(rows, columns=["ticker", "accn", "concept", "unit", "value"])


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    path = tmp_path_factory.mktemp("store") / "cells.store"
    data_store = DataStore(str(path))
    store = UsGaapStore(data_store)
    db = sqlite_facts_db(generated_facts(), tmp_path_factory.mktemp("db") / "facts.sqlite")
    store.build_concept_unit_pairs(db)
    store.generate_embeddings(db, embedder=CountingEmbedder(dim=24), model_id="test-hash-24")
    store.fit_scalers("robust")
    store.fit_pca(None, 8)
    store.write_triplets()
    data_store.close()
    db.close()
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_workers_each_open_the_store_and_cover_the_split_once(store_path):
    opener = StoreOpener(str(store_path))
    dataset = IterableConceptValueDataset(
        opener, split="train", val_fraction=0.2, batch_size=100, internal_batch_size=300
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    seen = np.concatenate([b["i_cell"].numpy() for b in loader])
    store = opener()
    cells = store.read_cell_range(0, store.get_triplet_count())
    expected = cells.i_cell[split_mask(cells.cell_key, "train", 0.2)]
    assert len(seen) == len(np.unique(seen))
    np.testing.assert_array_equal(np.sort(seen), np.sort(expected))


def test_train_then_encode_and_export_latents(store_path, tmp_path):
    opener = StoreOpener(str(store_path))
    result = train_stage1(opener, TrainConfig(**TINY, max_epochs=2), tmp_path / "train")
    assert result.epochs_run == 2 and np.isfinite(result.best_val_loss)
    assert "val/r2_median" in result.metrics

    store = opener()
    latents = encode(result.best_checkpoint_path, np.array([0, 5, 7]), store)
    assert latents.shape == (3, 8) and latents.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(latents, axis=1), 1.0, rtol=1e-5)
    same = encode(result.best_checkpoint_path, store.read_cells(np.array([0, 5, 7])), store)
    np.testing.assert_allclose(same, latents, rtol=1e-5, atol=1e-6)

    out = tmp_path / "latents.npy"
    code = cli_main(
        ["train", "export-latents", "--checkpoint", result.best_checkpoint_path,
         "--store", str(store_path), "--out", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    exported = np.load(out)
    assert exported.shape == (store.get_triplet_count(), 8)
    np.testing.assert_allclose(exported[[0, 5, 7]], latents, rtol=1e-5, atol=1e-6)


def test_cli_train_run_and_resume(store_path, tmp_path, capsys):
    common = ["train", "run", "--store", str(store_path), "--output-dir", str(tmp_path),
              "--latent-dim", "4", "--hidden-dim", "16", "--batch-size", "256"]  # fmt: skip
    assert cli_main([*common, "--max-epochs", "1"]) == 0
    assert '"epochs_run": 1' in capsys.readouterr().out
    assert cli_main([*common, "--max-epochs", "2", "--resume"]) == 0
    assert '"epochs_run": 2' in capsys.readouterr().out
    with pytest.raises(ValueError, match="batch_size"):
        cli_main([*common, "--batch-size", "0"])


def test_real_store_knows_each_cell_ticker(store_path):
    store = StoreOpener(str(store_path))()
    tickers = store.get_tickers()
    assert tickers == ["T0", "T1", "T2", "T3", "T4"]  # ticker-sorted build order
    cells = store.read_cell_range(0, store.get_triplet_count())
    assert cells.ticker_id.dtype == np.uint32 and len(cells.ticker_id) == len(cells.pair_id)
    facts = generated_facts()  # the same rows, in the store's (ticker, accn, concept) order
    facts = facts.sort_values(["ticker", "accn", "concept", "unit"], kind="stable")
    assert [tickers[t] for t in cells.ticker_id] == facts["ticker"].tolist()


def test_cli_heldout_training_then_evaluate_writes_the_documented_json(
    store_path, tmp_path, capsys
):
    out = tmp_path / "evaluation.json"
    run = ["train", "run", "--store", str(store_path), "--output-dir", str(tmp_path),
           "--latent-dim", "4", "--hidden-dim", "16", "--batch-size", "256", "--max-epochs", "2",
           "--heldout-tickers", "T3"]  # fmt: skip
    assert cli_main(run) == 0
    captured = capsys.readouterr()
    assert '"heldout_tickers": [\n    "T3"\n  ]' in captured.out
    assert "epoch 2/2:" in captured.err and "ETA" in captured.err
    assert "epoch 0/2 (starting state" in captured.err and "best checkpoint:" in captured.err
    assert '"configured_latent_dim": 4' in captured.out and '"kept_starting_state"' in captured.out
    checkpoint = tmp_path / "checkpoints" / "stage1_resume.ckpt"
    evaluate = ["train", "evaluate", "--checkpoint", str(checkpoint), "--store", str(store_path),
                "--out", str(out)]  # fmt: skip
    assert cli_main(evaluate) == 0
    assert "latent 4 (configured 4, input width" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["latent"]["effective"] == saved["latent"]["configured"] == 4
    assert saved["split"]["heldout_tickers"] == ["T3"]  # read back from the checkpoint
    assert saved["split"]["cells"]["heldout"] == int((generated_facts()["ticker"] == "T3").sum())
    for part in (saved["model"], saved["baselines"]["pca"], saved["baselines"]["pair_median"]):
        assert {"value_median_rel_error", "value_within_1pct", "embedding_cosine"} <= set(part)
    assert saved["baselines"]["pca"]["latent_dim"] == 4
    assert set(saved["checks"]) == {
        "finite_outputs", "unit_norm_latents", "beats_pair_median_on_heldout_tickers",
        "not_worse_than_same_size_pca_on_both",
    }  # fmt: skip


def test_missing_store_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="store file"):
        StoreOpener(str(tmp_path / "nope.store"))()


@pytest.mark.slow
def test_a_few_epochs_on_the_real_csvs_lower_validation_loss(shared_data, tmp_path):
    db_module = pytest.importorskip("narrative_pipeline.db.database", reason="db not built yet")
    pytest.importorskip("narrative_pipeline.us_gaap.ingest", reason="CSV ingestion not built yet")
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    path = tmp_path / "real.store"
    data_store = DataStore(str(path))
    db = db_module.DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    report = UsGaapStore(data_store).ingest_us_gaap_csvs(
        shared_data / "sec-fetcher-csvs", db, embedder=CountingEmbedder(dim=32), pca_components=16
    )
    data_store.close()
    assert report.triplets > 1000
    config = TrainConfig(**{**TINY, "batch_size": 256}, max_epochs=4)
    result = train_stage1(StoreOpener(str(path)), config, tmp_path / "train")
    rows = next(
        v for k, v in torch.load(result.last_checkpoint_path, weights_only=False)["callbacks"].items()
        if "LossHistory" in k
    )["epochs"]  # fmt: skip
    val = [r["val_loss_epoch"] for r in rows]
    assert len(val) == 4 and val[-1] < val[0]
    assert result.metrics["val/median_rel_error"] >= 0
