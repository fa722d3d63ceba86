"""UsGaapStore steps 2-6 and reads, over the dict-backed test fake store and a real SQLite
database (`sqlite_facts_db`: synthetic facts written through the production write path)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from xxhash import xxh3_64_intdigest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.db.fact_readback import FactCodes
from narrative_pipeline.us_gaap import build, layout
from narrative_pipeline.us_gaap.generations import StoreState
from narrative_pipeline.us_gaap_store import StaleTripletsError, UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_fakes import (
    CountingEmbedder,
    FakeDictStore,
    assert_exact_round_trip,
    sqlite_facts_db,
    synthetic_facts,
)


def _run_steps(
    store: UsGaapStore, db: DbUsGaap, embedder: CountingEmbedder, kind: str = "robust"
) -> None:
    store.build_concept_unit_pairs(db)
    store.generate_embeddings(db, embedder=embedder, model_id="counting-fake")
    store.fit_scalers(kind)
    store.fit_pca(make_plots=False)
    store.write_triplets()


@pytest.fixture
def built(tmp_path_factory) -> Iterator[tuple[UsGaapStore, DbUsGaap, FakeDictStore]]:
    fake = FakeDictStore()
    db = sqlite_facts_db(synthetic_facts(), tmp_path_factory.mktemp("db") / "built.sqlite")
    store = UsGaapStore(fake)
    _run_steps(store, db, CountingEmbedder())
    yield store, db, fake
    db.close()


def _splitmix_cell_key(ticker: str, accn: str, concept: str, unit: str) -> int:
    """The documented cell key formula in plain Python integers (independent of numpy)."""
    mask = (1 << 64) - 1
    x = (xxh3_64_intdigest(f"{concept}|{unit}".encode()) * 0x9E3779B97F4A7C15) & mask
    x = ((x << 31) | (x >> 33)) & mask
    x ^= xxh3_64_intdigest(f"{ticker}|{accn}".encode())
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_cell_key_is_the_documented_stable_formula() -> None:
    key = build.cell_key("AAPL", "0000320193-24-000123", "Assets", "USD")
    assert key == _splitmix_cell_key("AAPL", "0000320193-24-000123", "Assets", "USD")
    assert key == 12769731366097084907  # pinned: a changed formula reshuffles train/val splits
    assert build.cell_key("AAPL", "0000320193-24-000123", "Assets", "EUR") != key
    assert build.cell_key("MSFT", "0000320193-24-000123", "Assets", "USD") != key
    rows = [
        ("AAPL", "A1", "Assets", "USD"),
        ("AAPL", "A1", "Cash", "USD"),
        (None, "A2", "Assets", "USD"),
    ]
    frame = pd.DataFrame(rows, columns=["ticker", "accn", "concept", "unit"])
    expected = [_splitmix_cell_key(*(v or "" for v in row)) for row in rows]  # missing as ""
    assert build.cell_keys(frame).tolist() == expected


def test_cells_follow_database_order_with_stable_keys(built) -> None:
    store, db, _ = built
    facts = db.facts_frame()
    assert store.get_triplet_count() == len(facts)
    cells = store.read_cell_range(0, len(facts))
    np.testing.assert_array_equal(cells.unscaled, facts["value"].to_numpy())
    expected_keys = [
        build.cell_key(t, a, c, u)
        for t, a, c, u in facts[["ticker", "accn", "concept", "unit"]].itertuples(index=False)
    ]
    assert cells.cell_key.tolist() == expected_keys
    pairs = [p for _, p in store.iterate_concept_unit_pairs()]
    first_seen = list(dict.fromkeys(zip(facts["concept"], facts["unit"], strict=True)))
    assert [tuple(p) for p in pairs] == first_seen
    assert store.get_pair_count() == len(first_seen)
    names = [pairs[p] for p in cells.pair_id.tolist()]
    assert [(n.concept, n.uom) for n in names] == list(
        zip(facts["concept"], facts["unit"], strict=True)
    )


def test_every_cell_round_trips_exactly_through_its_scaler(built) -> None:
    store, _, _ = built
    cells = store.batch_lookup_by_indices(np.arange(store.get_triplet_count()))
    for cell in cells:
        assert cell.scaler.transform([[cell.unscaled_value]])[0][0] == cell.scaled_value
        if cell.unscaled_value != 0:
            assert cell.scaled_value != cell.unscaled_value
        assert np.isfinite(cell.scaled_value)


def test_quantile_scalers_round_trip_and_only_use_robust_where_needed(built) -> None:
    store, _, _ = built
    report = store.fit_scalers("quantile")
    with pytest.raises(StaleTripletsError):
        store.read_cells([0])
    store.write_triplets()
    assert report.robust_fallback_pairs == 1  # the single-value pair
    cells = store.batch_lookup_by_indices(range(store.get_triplet_count()))
    kinds = {type(c.scaler).__name__ for c in cells}
    assert kinds == {"QuantileTransformer", "RobustScaler"}
    for cell in cells:
        assert cell.scaler.transform([[cell.unscaled_value]])[0][0] == cell.scaled_value
        if cell.unscaled_value != 0:
            assert cell.scaled_value != cell.unscaled_value


def test_read_cells_equals_object_lookups_in_any_order(built) -> None:
    store, _, _ = built
    n = store.get_triplet_count()
    indices = np.random.default_rng(1).integers(0, n, size=500)
    arrays = store.read_cells(indices)
    objects = store.batch_lookup_by_indices(indices)
    assert [c.i_cell for c in objects] == indices.tolist()
    assert [c.pair_id for c in objects] == arrays.pair_id.tolist()
    assert [c.unscaled_value for c in objects] == arrays.unscaled.tolist()
    assert [c.scaled_value for c in objects] == arrays.scaled.tolist()
    assert [c.cell_key for c in objects] == arrays.cell_key.tolist()
    matrix, pairs = store.get_embedding_matrix()
    for cell in objects[:50]:
        np.testing.assert_array_equal(cell.embedding, matrix[cell.pair_id])
        assert (cell.concept, cell.uom) == pairs[cell.pair_id]
        assert cell["scaled_value"] == cell.scaled_value
    with pytest.raises(IndexError):
        store.read_cells([n])
    with pytest.raises(IndexError):
        store.lookup_by_index(-1)


def test_lookup_by_triplet_finds_first_cell_and_rejects_unknown(built) -> None:
    store, db, _ = built
    facts = db.facts_frame()
    for i in (0, 17, len(facts) - 1):
        concept, unit, value = facts.loc[i, ["concept", "unit", "value"]]
        cell = store.lookup_by_triplet(concept, unit.lower(), value)
        same = facts[(facts.concept == concept) & (facts.unit == unit) & (facts.value == value)]
        assert cell.i_cell == same.index.min()
        assert (cell.concept, cell.uom, cell.unscaled_value) == (concept, unit, value)
    with pytest.raises(KeyError):
        store.lookup_by_triplet("Assets", "USD", 0.123456)
    with pytest.raises(KeyError):
        store.lookup_by_triplet("NoSuchConcept", "USD", 1.0)


def test_embedding_cache_means_second_run_embeds_nothing(tmp_path: Path) -> None:
    fake = FakeDictStore()
    db = sqlite_facts_db(synthetic_facts(), tmp_path / "facts.sqlite")
    store = UsGaapStore(fake)
    embedder = CountingEmbedder()
    store.build_concept_unit_pairs(db)
    first = store.generate_embeddings(db, embedder=embedder, model_id="counting-fake")
    second = store.generate_embeddings(db, embedder=embedder, model_id="counting-fake")
    assert first.embedded == first.n_pairs and first.cache_hits == 0
    assert second.embedded == 0 and second.cache_hits == second.n_pairs
    assert embedder.embedded == first.n_pairs
    other_model = store.generate_embeddings(db, embedder=embedder, model_id="another-model")
    assert other_model.embedded == other_model.n_pairs


def test_taxonomy_text_is_used_when_known(tmp_path: Path) -> None:
    taxonomy = pd.DataFrame(
        {
            "name": ["Assets"],
            "label": ["Assets"],
            "documentation": ["Sum of the carrying amounts."],
            "balance_type": ["debit"],
            "period_type": ["instant"],
            "concept_type": ["monetaryItemType"],
        }
    )
    db = sqlite_facts_db(synthetic_facts(), tmp_path / "facts.sqlite", taxonomy=taxonomy)
    store = UsGaapStore(FakeDictStore())
    store.build_concept_unit_pairs(db)
    report = store.generate_embeddings(db, embedder=CountingEmbedder(), model_id="m")
    assert report.texts_with_taxonomy == 1
    assert "Assets: Sum of the carrying amounts. measured in USD" in report.example_texts


def test_pca_is_deterministic_across_stores(tmp_path: Path) -> None:
    blobs = []
    for i in range(2):
        fake = FakeDictStore()
        store = UsGaapStore(fake)
        db = sqlite_facts_db(synthetic_facts(), tmp_path / f"facts{i}.sqlite")
        _run_steps(store, db, CountingEmbedder())
        blobs.append(
            (pickle.dumps(store.load_pca_model()), store.get_embedding_matrix()[0].tobytes())
        )
    assert blobs[0] == blobs[1]


def test_rebuild_replaces_generation_and_deletes_the_old_keys(built, tmp_path: Path) -> None:
    store, db, fake = built
    keys_before = set(fake.data)
    more = pd.concat(
        [
            synthetic_facts(),
            synthetic_facts(n_tickers=2, seed=5).assign(ticker=lambda f: "Z" + f.ticker),
        ]
    )
    bigger = sqlite_facts_db(more, tmp_path / "bigger.sqlite")
    report = store.build_concept_unit_pairs(bigger)
    assert store.get_triplet_count() == db.fact_count()  # still the old live data while building
    store.read_cells([0])
    store.generate_embeddings(bigger, embedder=CountingEmbedder(), model_id="counting-fake")
    store.fit_scalers()
    store.fit_pca(make_plots=False)
    store.write_triplets()
    assert report.generation == 2
    assert store.get_triplet_count() == len(more)
    old_cell_keys = {layout.cell_column_key(1, c, 0) for c in layout.STORED_COLUMNS}
    assert old_cell_keys <= keys_before
    assert not (old_cell_keys & set(fake.data))
    embedding_cache = {k for k in keys_before if k[:8] == layout.EMBEDDING_CACHE.namespace(b"")[:8]}
    assert embedding_cache and embedding_cache <= set(fake.data)  # the cache survives


def test_unfinished_build_is_discarded_by_the_next_one(built) -> None:
    store, db, fake = built
    store.build_concept_unit_pairs(db)  # never finished
    store.build_concept_unit_pairs(db)
    pending_gen2 = {layout.cell_column_key(2, "pair_id", 0), layout.pairs_key(2)}
    assert not (pending_gen2 & set(fake.data))
    assert store.get_triplet_count() == db.fact_count()


def test_reads_before_any_ingest() -> None:
    store = UsGaapStore(FakeDictStore())
    assert store.get_triplet_count() == 0 and store.get_pair_count() == 0
    assert list(store.iterate_concept_unit_pairs()) == []
    assert store.load_pca_model() is None
    with pytest.raises(LookupError):
        store.read_cells([0])
    with pytest.raises(RuntimeError, match="build_concept_unit_pairs"):
        store.fit_scalers()


def test_many_chunks_and_ranges_across_chunk_borders(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 2 * layout.CHUNK_CELLS + 1234
    facts = pd.DataFrame(
        {
            "ticker": np.repeat([f"T{i:03d}" for i in range(40)], n // 40 + 1)[:n],
            "accn": [f"a{i // 50:06d}" for i in range(n)],
            "concept": [f"C{i % 50:02d}" for i in range(n)],
            "unit": "USD",
            "value": np.round(rng.normal(0, 1e6, size=n), 0),
        }
    )
    fake = FakeDictStore()
    store = UsGaapStore(fake, cache_chunks=1)
    db = sqlite_facts_db(facts, tmp_path / "facts.sqlite")
    _run_steps(store, db, CountingEmbedder())
    ordered = db.facts_frame()
    assert store.get_triplet_count() == n
    border = layout.CHUNK_CELLS
    part = store.read_cell_range(border - 10, border + 10)
    np.testing.assert_array_equal(
        part.unscaled, ordered["value"].to_numpy()[border - 10 : border + 10]
    )
    np.testing.assert_array_equal(part.i_cell, np.arange(border - 10, border + 10))
    indices = rng.integers(0, n, size=5000)
    picked = store.read_cells(indices)
    np.testing.assert_array_equal(picked.unscaled, ordered["value"].to_numpy()[indices])
    whole = store.read_cell_range(0, n + 100)
    assert len(whole) == n
    assert_exact_round_trip(store, whole)


def test_pca_report_carries_plots_and_saves_them(built, tmp_path) -> None:
    store, _, _ = built
    report = store.fit_pca(n_components=3, plot_dir=tmp_path)
    assert report.n_components == 3 and report.configured_components == 3
    assert report.explained_variance_png.startswith(b"\x89PNG") and report.scatter_png.startswith(
        b"\x89PNG"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pca_explained_variance.png",
        "pca_pair_scatter.png",
    ]
    store.write_triplets()
    assert store.load_pca_model().n_components_ == 3
    assert store.get_embedding_matrix()[0].shape == (store.get_pair_count(), 3)


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_tiny_databases_build_without_errors(rows: int, tmp_path: Path) -> None:
    facts = synthetic_facts().head(rows) if rows else synthetic_facts().head(0)
    if rows == 3:
        # one pair only, in three filings (a database holds one value per filing and pair)
        facts = facts.assign(concept="Assets", unit="USD", accn=["a1", "a2", "a3"])
    db = sqlite_facts_db(facts, tmp_path / "facts.sqlite")
    store = UsGaapStore(FakeDictStore())
    report = store.build_from_db(db, embedder=CountingEmbedder(), make_plots=False)
    assert report.downstream_ran and store.get_triplet_count() == rows
    assert any("PCA skipped" in m for m in report.messages)
    assert len(store.read_cell_range(0, 10)) == rows
    again = store.build_from_db(db, embedder=CountingEmbedder(), make_plots=False)
    assert not again.downstream_ran  # up to date, even without a PCA
    if rows:
        cell = store.lookup_by_index(0)
        assert cell.embedding is None
        assert cell.scaler.transform([[cell.unscaled_value]])[0][0] == cell.scaled_value


FAILING_GROUP_ROWS = 70_000  # facts per group the failing database streams


class _FailingDb(DbUsGaap):
    """A real SQLite DbUsGaap whose connection "drops" after `fail_after` groups of the fact
    stream the store build reads (iter_fact_codes), in groups of about 70,000 facts."""

    def __init__(self, url: str, fail_after: int = 1) -> None:
        super().__init__(url)
        self.groups = 0
        self.fail_after = fail_after

    def iter_fact_codes(self, target_rows: int = FAILING_GROUP_ROWS) -> Iterator[FactCodes]:
        for codes in super().iter_fact_codes(FAILING_GROUP_ROWS):
            self.groups += 1
            if self.groups > self.fail_after:
                raise ConnectionError("database went away")
            yield codes


def _failing_db(tmp_path: Path, fail_after: int) -> _FailingDb:
    path = tmp_path / "big.sqlite"
    sqlite_facts_db(_big_facts(), path).close()
    return _FailingDb(f"sqlite:///{path}", fail_after=fail_after)


def _big_facts(n: int = 3 * layout.CHUNK_CELLS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticker": np.repeat([f"T{i:04d}" for i in range(n // 500 + 1)], 500)[:n],
            "accn": [f"a{i // 50:06d}" for i in range(n)],
            "concept": [f"C{i % 50:02d}" for i in range(n)],
            "unit": "USD",
            "value": np.arange(n, dtype=np.float64),
        }
    )


def test_failed_build_cleans_up_and_keeps_the_live_data(built, tmp_path: Path) -> None:
    store, db, fake = built
    keys_before = set(fake.data)
    with pytest.raises(ConnectionError):  # two groups (two chunks) written, then the drop
        store.build_concept_unit_pairs(_failing_db(tmp_path, fail_after=2))
    assert set(fake.data) - keys_before == set()  # only the manifest changed, nothing leaked
    assert store.get_triplet_count() == db.fact_count()
    store.read_cells([0])


def test_build_killed_midway_is_found_and_deleted_by_the_next_one(
    built, tmp_path: Path, monkeypatch
) -> None:
    store, db, fake = built
    keys_before = set(fake.data)
    failing = _failing_db(tmp_path, fail_after=1)
    monkeypatch.setattr(StoreState, "delete_record", lambda self, record: None)  # "kill -9"
    with pytest.raises(ConnectionError):  # one group of ~70,000 facts: one chunk written
        store.build_concept_unit_pairs(failing)
    monkeypatch.undo()
    leaked = set(fake.data) - keys_before
    assert layout.cell_column_key(2, "pair_id", 0) in leaked
    reopened = UsGaapStore(fake)
    reopened._state.manifest()["pending"] = {
        "generation": 2,
        "incomplete": True,
    }  # what a kill leaves
    with pytest.raises(RuntimeError, match="did not finish"):
        reopened.fit_scalers()
    reopened.build_concept_unit_pairs(db)
    assert not (leaked & set(fake.data))
