"""Frozen scalers on an update (`freeze_scalers` / `fit_scalers(freeze_existing=True)`).

Real SQLite database and embedded store, sec-fetcher CSVs from `sample_data` (as in
test_us_gaap_store_incremental.py). A new ticker touching existing pairs and bringing a new one:
the existing pairs' scaler parameters must stay bit for bit, the new pair must be fitted on its
values, and every cell must read back scaled by the frozen parameters; the usual update must
refit the touched pairs (so the frozen check is not vacuous).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.preprocessing import scalers as scaler_fns
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.store import DataStore
from narrative_pipeline.us_gaap import incremental, layout
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_fakes import CountingEmbedder

OPTIONS = {"embedder": CountingEmbedder(), "model_id": "counting-fake", "make_plots": False}
FIRST = ["AAPL", "MSFT", "NVDA", "KO"]
NEW_PAIR = ("FrozenScalerTestConcept", "USD")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(layout, "CHUNK_SHIFT", 9)
    monkeypatch.setattr(layout, "CHUNK_CELLS", 512)
    # Two of six tickers are ~30% of this small corpus: keep the usual updates incremental.
    monkeypatch.setattr(incremental, "FULL_BUILD_SHARE", 0.6)


def _corpus(tmp_path: Path, kind: str = "robust") -> tuple[UsGaapStore, DbUsGaap, Path]:
    csv_dir = tmp_path / "csv"
    generate_sample_csvs(csv_dir, tickers=FIRST, filings_per_ticker=6)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    store = UsGaapStore(DataStore(str(tmp_path / "store.bin")))
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    store.build_from_db(db, scaler_kind=kind, **OPTIONS)
    return store, db, csv_dir


def _add_newcomer(store: UsGaapStore, db: DbUsGaap, csv_dir: Path) -> None:
    """XOM (every sample pair, other values) and one pair no ticker had before."""
    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6, seed=11)
    (csv_dir / "TINY.csv").write_text(
        f"{NEW_PAIR[0]},fy,fp,form,filed,accn\n"
        "1000::USD,2024,FY,10-K,2025-02-01,0000000009-25-000001\n"
        "3000::USD,2023,FY,10-K,2024-02-01,0000000009-24-000001\n"
        "7000::USD,2022,FY,10-K,2023-02-01,0000000009-23-000001\n"
    )
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)


def _params_by_pair(store: UsGaapStore) -> dict[tuple[str, str], tuple[int, float, float]]:
    state = store._state
    live = state.require_live()
    kinds, center, scale = state.scaler_params(live)
    return {
        tuple(p): (int(kinds[i]), float(center[i]), float(scale[i]))
        for i, p in enumerate(state.pairs(live))
    }


def _values_of(store: UsGaapStore, pair: tuple[str, str]) -> np.ndarray:
    cells = store.read_cell_range(0, store.get_triplet_count())
    pair_id = [tuple(p) for _, p in store.iterate_concept_unit_pairs()].index(pair)
    return np.sort(cells.unscaled[cells.pair_id == pair_id])


def test_an_update_with_frozen_scalers_keeps_existing_pairs_bit_for_bit(tmp_path: Path) -> None:
    store, db, csv_dir = _corpus(tmp_path)
    before = _params_by_pair(store)
    scalers_before = dict(
        zip(
            [tuple(p) for _, p in store.iterate_concept_unit_pairs()],
            store.load_scalers(),
            strict=True,
        )
    )
    _add_newcomer(store, db, csv_dir)
    report = store.update_from_db(db, freeze_scalers=True, **OPTIONS)

    assert report.pairs_report.incremental, report.messages
    assert report.scaler_report.frozen_pairs == len(before)
    assert report.scaler_report.refitted_pairs == 1  # the new pair only
    after = _params_by_pair(store)
    assert {p: after[p] for p in before} == before  # floats compared exactly
    # the new pair is fitted on its own values, as any fit would do it
    fitted = scaler_fns.robust_params(scaler_fns.GroupedValues(
        _values_of(store, NEW_PAIR), np.array([0]), np.array([3])))  # fmt: skip
    assert after[NEW_PAIR][1:] == (float(fitted.center[0]), float(fitted.scale[0]))
    # every cell reads back scaled with the frozen parameters, the newcomer's included
    cells = store.read_cell_range(0, store.get_triplet_count())
    pairs = [tuple(p) for _, p in store.iterate_concept_unit_pairs()]
    checked = 0
    for pair_id in np.unique(cells.pair_id).tolist():
        mask = cells.pair_id == pair_id
        if pairs[pair_id] not in scalers_before:
            continue
        scaler = scalers_before[pairs[pair_id]]
        expected = scaler.transform(cells.unscaled[mask].reshape(-1, 1))[:, 0]
        np.testing.assert_array_equal(cells.scaled[mask], expected)
        checked += int(mask.sum())
    assert checked == store.get_triplet_count() - 3
    store.data_store.close()


def test_the_usual_update_refits_the_pairs_the_newcomer_touches(tmp_path: Path) -> None:
    """The counterpart: without freezing, XOM's values move its pairs' scalers."""
    store, db, csv_dir = _corpus(tmp_path)
    before = _params_by_pair(store)
    _add_newcomer(store, db, csv_dir)
    report = store.update_from_db(db, **OPTIONS)
    assert report.scaler_report.frozen_pairs is None
    after = _params_by_pair(store)
    moved = [p for p in before if after[p] != before[p]]
    assert len(moved) > len(before) // 2
    store.data_store.close()


def test_a_large_change_stays_incremental_and_keeps_the_pca(tmp_path: Path, monkeypatch) -> None:
    store, db, csv_dir = _corpus(tmp_path)
    pca_before = store.load_pca_model()
    before = _params_by_pair(store)
    monkeypatch.setattr(incremental, "FULL_BUILD_SHARE", 0.01)  # any change is "large"
    _add_newcomer(store, db, csv_dir)
    report = store.update_from_db(db, freeze_scalers=True, pca_floor=0.0, **OPTIONS)
    assert report.messages[-1] == "incremental: 2 tickers added or changed, 0 removed"
    assert report.pca_report is not None and report.pca_report.refitted is False
    np.testing.assert_array_equal(store.load_pca_model().components_, pca_before.components_)
    after = _params_by_pair(store)
    assert {p: after[p] for p in before} == before
    assert store.get_triplet_count() == db.fact_count()
    store.data_store.close()


@pytest.mark.parametrize("incremental_pairs", [True, False])
def test_the_scalers_step_freezes_by_pair_name(tmp_path: Path, incremental_pairs: bool) -> None:
    """The Dagster chain (`scalers` asset, freeze_existing): after an incremental pairs step
    (ids kept) and after a full one (ids renumbered), existing pairs keep their parameters."""
    store, db, csv_dir = _corpus(tmp_path)
    before = _params_by_pair(store)
    _add_newcomer(store, db, csv_dir)
    pairs = store.build_concept_unit_pairs(db, incremental=incremental_pairs)
    assert pairs.incremental is incremental_pairs
    store.generate_embeddings(db, embedder=CountingEmbedder(), model_id="counting-fake")
    report = store.fit_scalers("robust", freeze_existing=True)
    assert (report.frozen_pairs, report.refitted_pairs) == (len(before), 1)
    store.fit_pca(make_plots=False)
    store.write_triplets()
    after = _params_by_pair(store)
    assert {p: after[p] for p in before} == before
    assert NEW_PAIR in after
    store.data_store.close()


def test_quantile_scalers_stay_frozen_and_another_kind_is_refused(tmp_path: Path) -> None:
    store, db, csv_dir = _corpus(tmp_path, kind="quantile")
    names = [tuple(p) for _, p in store.iterate_concept_unit_pairs()]
    quantiles = {
        name: s.quantiles_.copy()
        for name, s in zip(names, store.load_scalers(), strict=True)
        if type(s).__name__ == "QuantileTransformer"
    }
    assert quantiles
    _add_newcomer(store, db, csv_dir)
    store.update_from_db(db, freeze_scalers=True, **OPTIONS)
    names = [tuple(p) for _, p in store.iterate_concept_unit_pairs()]
    now = dict(zip(names, store.load_scalers(), strict=True))
    for name, q in quantiles.items():
        np.testing.assert_array_equal(now[name].quantiles_, q)

    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6, seed=12)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    store.build_concept_unit_pairs(db, incremental=True)
    store.generate_embeddings(db, embedder=CountingEmbedder(), model_id="counting-fake")
    with pytest.raises(ValueError, match="cannot freeze the live 'quantile' scalers"):
        store.fit_scalers("robust", freeze_existing=True)
    store.data_store.close()


def test_with_nothing_live_every_pair_is_fitted(tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    generate_sample_csvs(csv_dir, tickers=FIRST[:2], filings_per_ticker=3)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    store = UsGaapStore(DataStore(str(tmp_path / "store.bin")))
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    report = store.update_from_db(db, freeze_scalers=True, **OPTIONS)
    assert report.messages[-1] == "full build: no live generation"
    assert report.scaler_report.frozen_pairs == 0
    assert report.scaler_report.refitted_pairs is None  # a full fit: every pair
    store.data_store.close()
