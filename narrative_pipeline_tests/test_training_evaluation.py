"""Held-out tickers and the evaluation: no held-out cell in training, baselines, verdicts, CLI.

Crafted predictors (stand-ins named as such) check that the verdicts can fail: a model that
returns the per-pair median must not "beat" the per-pair median baseline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from narrative_pipeline.training import IterableConceptValueDataset
from narrative_pipeline.training.evaluation import (
    PairMedianPredictor,
    Prediction,
    SplitCells,
    evaluate,
    judge,
    split_indices,
)
from narrative_pipeline.training.splits import resolve_heldout_tickers, ticker_fraction
from narrative_pipeline_tests.test_training_dataset import (
    FakeStoreFactory,
    FakeUsGaapStore,
    collect_cells,
)

HELDOUT = ["TK2", "TK5"]


def verdicts_of(evaluation) -> dict[str, bool]:
    return {v.name: v.passed for v in judge(evaluation)}


@pytest.mark.parametrize("split", ["train", "val"])
def test_heldout_tickers_never_reach_a_training_or_validation_batch(split):
    store = FakeUsGaapStore(n_cells=2000)
    dataset = IterableConceptValueDataset(
        FakeStoreFactory(n_cells=2000), split=split, batch_size=64, internal_batch_size=300,
        val_fraction=0.2, heldout_tickers=HELDOUT,
    )  # fmt: skip
    seen = collect_cells(dataset, num_workers=0)
    tickers = {store.tickers[t] for t in store.ticker_id[seen]}
    assert seen.size > 0 and not tickers & set(HELDOUT)
    heldout = collect_cells(
        IterableConceptValueDataset(
            FakeStoreFactory(n_cells=2000), split="heldout", heldout_tickers=HELDOUT
        )
    )
    expected = np.flatnonzero(np.isin(store.ticker_id, [2, 5]))
    assert sorted(heldout.tolist()) == expected.tolist()


def test_heldout_choice_is_explicit_or_a_stable_hash_with_at_least_one_each_side():
    tickers = [f"T{i}" for i in range(40)]
    assert resolve_heldout_tickers(tickers, ["B", "A"], 0.5) == ["A", "B"]
    chosen = resolve_heldout_tickers(tickers, [], 0.2)
    assert chosen == sorted(t for t in tickers if ticker_fraction(t) < 0.2)
    assert 0 < len(chosen) < len(tickers)
    # Adding tickers never moves an already held-out one back into training.
    assert set(chosen) <= set(resolve_heldout_tickers([*tickers, "NEW1", "NEW2"], [], 0.2))
    assert len(resolve_heldout_tickers(["A", "B"], [], 0.01)) == 1
    assert resolve_heldout_tickers(["A", "B"], [], 0.99) != ["A", "B"]
    assert resolve_heldout_tickers(["A"], [], 0.5) == []
    assert resolve_heldout_tickers(tickers, [], 0.0) == []


class OracleModel:
    """Stand-in model that reconstructs every cell exactly and has unit latents."""

    def predict(self, cells: SplitCells) -> Prediction:
        latents = np.ones((len(cells), 4)) / 2.0
        return Prediction(cells.unscaled.copy(), cells.x[:, :-1].copy(), latents)


class PairMedianModel:
    """Stand-in model that outputs its pair's training median: no better than the baseline."""

    def __init__(self, store: FakeUsGaapStore) -> None:
        train = split_indices(store, HELDOUT, 0.1)["train"]
        self.inner = PairMedianPredictor(
            store.pair_id[train].astype(np.int64), store.unscaled[train], store.load_scalers()
        )

    def predict(self, cells: SplitCells) -> Prediction:
        prediction = self.inner.predict(cells)
        prediction.latents = np.eye(1, 4).repeat(len(cells), axis=0)
        return prediction


class BrokenModel(OracleModel):
    """Stand-in model with a NaN output and latents of norm 2."""

    def predict(self, cells: SplitCells) -> Prediction:
        prediction = super().predict(cells)
        prediction.value[0] = np.nan
        prediction.latents = prediction.latents * 2
        return prediction


def run_evaluation(model, store):
    return evaluate(model, store, heldout_tickers=HELDOUT, val_fraction=0.1, latent_dim=2)[0]


def test_an_exact_model_passes_every_check_and_reports_the_documented_keys():
    store = FakeUsGaapStore(n_cells=3000)
    evaluation = run_evaluation(OracleModel(), store)
    assert evaluation["headline_split"] == "heldout"
    for figures in (evaluation["model"], *evaluation["baselines"].values()):
        for key in ("value_median_rel_error", "value_within_1pct", "embedding_cosine"):
            assert key in figures, key
    assert evaluation["model"]["value_median_rel_error"] == 0.0
    assert evaluation["model"]["value_within_1pct"] == 1.0
    assert evaluation["baselines"]["pair_median"]["value_median_rel_error"] > 0.05
    cells = evaluation["split"]["cells"]
    assert cells["heldout"] == int(np.isin(store.ticker_id, [2, 5]).sum())
    assert cells["train"] + cells["val"] + cells["heldout"] == 3000
    assert evaluation["baselines"]["pca"]["latent_dim"] == 2
    assert all(verdicts_of(evaluation).values()), verdicts_of(evaluation)


def test_a_model_that_outputs_the_pair_median_does_not_beat_the_baseline():
    store = FakeUsGaapStore(n_cells=3000)
    evaluation = run_evaluation(PairMedianModel(store), store)
    verdicts = verdicts_of(evaluation)
    assert verdicts["beats_pair_median_on_heldout_tickers"] is False
    assert verdicts["finite_outputs"] and verdicts["unit_norm_latents"]


def test_non_finite_outputs_and_long_latents_fail_their_checks():
    evaluation = run_evaluation(BrokenModel(), FakeUsGaapStore(n_cells=3000))
    verdicts = verdicts_of(evaluation)
    assert verdicts["finite_outputs"] is False
    assert verdicts["unit_norm_latents"] is False


def test_losing_to_pca_on_both_figures_fails_and_on_one_passes():
    evaluation = run_evaluation(OracleModel(), FakeUsGaapStore(n_cells=3000))
    pca = evaluation["baselines"]["pca"]
    worse_on_both = {"value_median_rel_error": pca["value_median_rel_error"] + 0.1,
                     "embedding_cosine": pca["embedding_cosine"] - 0.1}  # fmt: skip
    evaluation["model"].update(worse_on_both)
    assert verdicts_of(evaluation)["not_worse_than_same_size_pca_on_both"] is False
    evaluation["model"]["embedding_cosine"] = pca["embedding_cosine"] + 1e-6
    assert verdicts_of(evaluation)["not_worse_than_same_size_pca_on_both"] is True


def test_no_heldout_tickers_fails_the_heldout_check_and_falls_back_to_val():
    store = FakeUsGaapStore(n_cells=2000)
    evaluation = evaluate(OracleModel(), store, heldout_tickers=[], val_fraction=0.1, latent_dim=2)[
        0
    ]
    assert evaluation["headline_split"] == "val"
    assert verdicts_of(evaluation)["beats_pair_median_on_heldout_tickers"] is False


def test_evaluation_json_is_plain_json():
    from narrative_pipeline.training.evaluation import evaluation_json

    evaluation = run_evaluation(OracleModel(), FakeUsGaapStore(n_cells=2000))
    loaded = json.loads(evaluation_json(evaluation))
    assert "pair_errors" not in json.dumps(loaded)
    assert loaded["model"]["worst_pairs"][0]["pair"].startswith("Concept")
