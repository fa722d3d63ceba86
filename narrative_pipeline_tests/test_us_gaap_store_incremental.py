"""Incremental re-materialisation (`UsGaapStore.update_from_db`) against a full build.

Real SQLite database and embedded store; sec-fetcher CSVs from `sample_data`; chunks shrunk to
512 cells so that tickers span and share chunks. After each add / change / remove, the updated
store must hold exactly the cells a full build of the same database holds (by cell key, with
the right ticker), every scaled value must be its scaler's transform bit for bit, pair ids must
not move, untouched chunks and untouched pairs' scalers must be kept as they were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.store import DataStore
from narrative_pipeline.us_gaap import build, incremental, layout
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_fakes import (
    CountingEmbedder,
    assert_exact_round_trip,
)

OPTIONS = {"embedder": CountingEmbedder(), "model_id": "counting-fake", "make_plots": False}
FIRST = ["AAPL", "MSFT", "NVDA", "KO"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(layout, "CHUNK_SHIFT", 9)
    monkeypatch.setattr(layout, "CHUNK_CELLS", 512)
    # One sample ticker is ~20-30% of this small corpus: keep such updates incremental.
    monkeypatch.setattr(incremental, "FULL_BUILD_SHARE", 0.6)


@pytest.fixture
def corpus(tmp_path: Path):
    csv_dir = tmp_path / "csv"
    generate_sample_csvs(csv_dir, tickers=FIRST, filings_per_ticker=6)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    data_store = DataStore(str(tmp_path / "store.bin"))
    store = UsGaapStore(data_store)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    store.build_from_db(db, **OPTIONS)
    yield store, db, csv_dir, tmp_path
    data_store.close()


def _cells_by_key(store: UsGaapStore) -> dict[int, tuple[str, float, str, str]]:
    cells = store.read_cell_range(0, store.get_triplet_count())
    tickers = store.get_tickers()
    pairs = [p for _, p in store.iterate_concept_unit_pairs()]
    return {
        int(k): (tickers[t], float(v), *pairs[p])
        for k, t, v, p in zip(
            cells.cell_key, cells.ticker_id, cells.unscaled, cells.pair_id, strict=True
        )
    }


def _expected_cells(db: DbUsGaap) -> dict[int, tuple[str, float, str, str]]:
    frame = db.facts_frame()
    keys = build.cell_keys(frame)
    return {
        int(k): (t, float(v), c, u)
        for k, t, v, c, u in zip(
            keys, frame["ticker"], frame["value"], frame["concept"], frame["unit"], strict=True
        )
    }


def _scaler_params(store: UsGaapStore) -> dict[tuple[str, str], tuple[float, float]]:
    scalers = store.load_scalers()
    return {
        tuple(p): (float(scalers[i].center_[0]), float(scalers[i].scale_[0]))
        for i, p in store.iterate_concept_unit_pairs()
    }


def _full_build(db: DbUsGaap, path: Path) -> UsGaapStore:
    fresh = UsGaapStore(DataStore(str(path)))
    fresh.build_from_db(db, force=True, **OPTIONS)
    return fresh


def _check_against_full_build(store: UsGaapStore, db: DbUsGaap, path: Path) -> None:
    assert _cells_by_key(store) == _expected_cells(db)
    assert store.get_triplet_count() == db.fact_count()
    whole = store.read_cell_range(0, store.get_triplet_count())
    assert_exact_round_trip(store, whole)
    full = _full_build(db, path)
    live_params = _scaler_params(store)
    for pair, params in _scaler_params(full).items():
        assert live_params[pair] == params  # refitted pairs equal a fit over all values
    full.data_store.close()


def test_add_change_remove_one_ticker_matches_a_full_build(corpus) -> None:
    store, db, csv_dir, tmp_path = corpus
    pairs_before = [p for _, p in store.iterate_concept_unit_pairs()]
    live = store._state.live()
    refs_before = set(store._state.chunk_table(live).refs().tolist())

    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    report = store.update_from_db(db, **OPTIONS)
    assert report.messages[-1] == "incremental: 1 tickers added or changed, 0 removed"
    assert [p for _, p in store.iterate_concept_unit_pairs()][: len(pairs_before)] == pairs_before
    assert refs_before <= set(store._state.chunk_table(store._state.live()).refs().tolist())
    _check_against_full_build(store, db, tmp_path / "full_add.bin")

    generate_sample_csvs(csv_dir, tickers=["MSFT"], filings_per_ticker=4, seed=7)
    # 4 filings where there were 6: a deliberate shrink (refused without allow_shrink)
    report = store.ingest_us_gaap_csvs(csv_dir, db, downstream=False, allow_shrink=True)
    assert report.files_loaded == 1 and not report.skipped_files
    report = store.update_from_db(db, **OPTIONS)
    assert report.messages[-1] == "incremental: 1 tickers added or changed, 0 removed"
    _check_against_full_build(store, db, tmp_path / "full_change.bin")

    db.delete_ticker("NVDA")
    report = store.update_from_db(db, **OPTIONS)
    assert report.messages[-1] == "incremental: 0 tickers added or changed, 1 removed"
    _check_against_full_build(store, db, tmp_path / "full_remove.bin")
    assert "NVDA" in store.get_tickers()  # ids are append-only; it just owns no cell
    assert store.update_from_db(db, **OPTIONS).messages[-1] == "incremental: no ticker changed"


def test_untouched_pairs_keep_their_scalers_and_lookups_follow_moved_cells(corpus) -> None:
    store, db, csv_dir, tmp_path = corpus
    before = _scaler_params(store)
    (csv_dir / "TINY.csv").write_text(
        "AccountsPayableCurrent,fy,fp,form,filed,accn\n"
        "123456::USD,2024,FY,10-K,2025-02-01,0000000001-25-000001\n"
        "654321::USD,2023,FY,10-K,2024-02-01,0000000001-24-000001\n"
    )
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    report = store.update_from_db(db, **OPTIONS)
    assert report.pairs_report.incremental
    assert report.pairs_report.value_changed_pairs == 1  # only the tiny ticker's pair
    assert report.scaler_report.refitted_pairs == 1
    assert report.pca_report is not None, report.messages
    assert report.pca_report.refitted is False  # no new pair: the live model is kept
    after = _scaler_params(store)
    untouched = [pair for pair in before if pair != ("AccountsPayableCurrent", "USD")]
    assert untouched  # the check below is not vacuous
    for pair in untouched:
        assert after[pair] == before[pair]
    whole = store.read_cell_range(0, store.get_triplet_count())
    pairs = [p for _, p in store.iterate_concept_unit_pairs()]
    for i in np.linspace(0, len(whole) - 1, 40).astype(int).tolist():
        concept, unit = pairs[whole.pair_id[i]]
        found = store.lookup_by_triplet(concept, unit, float(whole.unscaled[i]))
        assert found.unscaled_value == whole.unscaled[i] and found.i_cell <= i


def test_the_step_by_step_chain_is_incremental_too(corpus) -> None:
    """What the Dagster assets call: each step on its own, pairs with incremental=True."""
    store, db, csv_dir, tmp_path = corpus
    pca_before = store.load_pca_model()
    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6, seed=3)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    pairs = store.build_concept_unit_pairs(db, incremental=True)
    assert pairs.incremental and pairs.changed_tickers == 1
    store.generate_embeddings(db, embedder=CountingEmbedder(), model_id="counting-fake")
    scalers = store.fit_scalers("robust")
    assert scalers.refitted_pairs == pairs.value_changed_pairs  # XOM has every sample pair
    pca = store.fit_pca(make_plots=False)
    assert not pca.refitted
    store.write_triplets()
    _check_against_full_build(store, db, tmp_path / "full_steps.bin")
    np.testing.assert_array_equal(store.load_pca_model().components_, pca_before.components_)


def test_a_large_change_or_force_is_a_full_build(corpus, monkeypatch) -> None:
    store, db, csv_dir, tmp_path = corpus
    monkeypatch.setattr(incremental, "FULL_BUILD_SHARE", 0.2)  # 1 of 5 tickers passes
    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    report = store.update_from_db(db, **OPTIONS)
    assert report.messages[-1].startswith("full build: 1 changed tickers hold")  # > 20% facts
    assert not report.pairs_report.incremental
    assert store.update_from_db(db, force=True, **OPTIONS).messages[-1] == "full build: forced"
    _check_against_full_build(store, db, tmp_path / "full_forced.bin")


def test_reads_see_the_old_state_until_the_switch(corpus, monkeypatch) -> None:
    store, db, csv_dir, _ = corpus
    count = store.get_triplet_count()
    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    reader = UsGaapStore(store.data_store)
    before = reader.read_cell_range(0, count)

    def fail(*_args, **_kwargs):
        raise RuntimeError("killed before the switch")

    monkeypatch.setattr("narrative_pipeline.us_gaap.model_steps.write_triplets", fail)
    with pytest.raises(RuntimeError, match="killed"):
        store.update_from_db(db, **OPTIONS)
    monkeypatch.undo()
    reader.refresh()
    again = reader.read_cell_range(0, count)
    np.testing.assert_array_equal(again.cell_key, before.cell_key)
    assert store._state.manifest()["pending"] is None  # the half update was deleted
    store.update_from_db(db, **OPTIONS)
    assert store.get_triplet_count() == db.fact_count()


def test_cell_ticker_ids_name_each_cells_ticker(corpus) -> None:
    store, db, _, _ = corpus
    cells = store.read_cells(np.arange(store.get_triplet_count())[::-1])
    tickers = store.get_tickers()
    expected = db.facts_frame()["ticker"].to_numpy()[::-1]
    assert cells.ticker_id.dtype == np.uint32
    assert [tickers[t] for t in cells.ticker_id.tolist()] == expected.tolist()


def test_quantile_scalers_survive_an_incremental_update(tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    generate_sample_csvs(csv_dir, tickers=FIRST, filings_per_ticker=6)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    store = UsGaapStore(DataStore(str(tmp_path / "store.bin")))
    store.ingest_us_gaap_csvs(csv_dir, db, scaler_kind="quantile", **OPTIONS)
    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=3)
    report = store.ingest_us_gaap_csvs(csv_dir, db, **OPTIONS)
    assert report.pairs_report.incremental and report.scaler_report.kind == "quantile"
    assert store.get_triplet_count() == db.fact_count()
    assert_exact_round_trip(store, store.read_cell_range(0, store.get_triplet_count()))
    assert any(type(s).__name__ == "QuantileTransformer" for s in store.load_scalers())
    store.data_store.close()


def test_kept_variance_is_the_explained_ratio_on_the_fitted_rows() -> None:
    from sklearn.decomposition import PCA

    rows = np.random.default_rng(0).standard_normal((300, 24)) * np.arange(1, 25)
    model = PCA(n_components=5, svd_solver="full").fit(rows)
    kept = incremental.kept_variance(model, rows)
    assert kept == pytest.approx(model.explained_variance_ratio_.sum(), rel=1e-12)
    shifted = rows.copy()
    shifted[:, :5] *= 100  # the smallest columns, which the components do not hold
    assert incremental.kept_variance(model, shifted) < kept


def test_the_first_update_is_a_full_build_and_the_next_finds_nothing_changed(
    tmp_path: Path,
) -> None:
    from narrative_pipeline_tests.test_us_gaap_store_fakes import (
        FakeDictStore,
        sqlite_facts_db,
        synthetic_facts,
    )

    store = UsGaapStore(FakeDictStore())
    db = sqlite_facts_db(synthetic_facts(n_tickers=3, seed=1), tmp_path / "facts.sqlite")
    assert store.update_from_db(db, **OPTIONS).messages[-1] == "full build: no live generation"
    assert store.update_from_db(db, **OPTIONS).messages[-1] == "incremental: no ticker changed"
    assert store.get_triplet_count() == db.fact_count()
    db.close()
