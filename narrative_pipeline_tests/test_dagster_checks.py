"""Asset checks pass on sound data and fail on crafted bad data (fake stores, no Dagster run)."""

import numpy as np
import pytest
from sklearn.preprocessing import RobustScaler

from narrative_pipeline import checks
from narrative_pipeline.us_gaap.cells import CellArrays


class FakeUsGaapStore:
    """The read API the checks use, over arrays a test can corrupt."""

    def __init__(self, n_pairs=3, cells_per_pair=40, seed=0):
        rng = np.random.default_rng(seed)
        self.pair_id = np.repeat(np.arange(n_pairs, dtype=np.uint32), cells_per_pair)
        self.unscaled = rng.normal(1e6, 3e5, size=self.pair_id.size)
        self.scalers = []
        self.scaled = np.empty_like(self.unscaled)
        for p in range(n_pairs):
            rows = self.pair_id == p
            scaler = RobustScaler().fit(self.unscaled[rows].reshape(-1, 1))
            self.scalers.append(scaler)
            self.scaled[rows] = scaler.transform(self.unscaled[rows].reshape(-1, 1))[:, 0]
        self.matrix = rng.normal(size=(n_pairs, 4))
        self.pairs = [(f"Concept{p}", "USD") for p in range(n_pairs)]

    def get_triplet_count(self):
        return int(self.pair_id.size)

    def get_pair_count(self):
        return len(self.pairs)

    def _cells(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        return CellArrays(
            i_cell=idx,
            pair_id=self.pair_id[idx],
            unscaled=self.unscaled[idx],
            scaled=self.scaled[idx],
            cell_key=idx.astype(np.uint64),
            ticker_id=(idx % 3).astype(np.uint32),
        )

    def read_cells(self, indices):
        return self._cells(indices)

    def read_cell_range(self, start, stop):
        return self._cells(np.arange(start, min(stop, self.get_triplet_count())))

    def load_scalers(self):
        return self.scalers

    def get_embedding_matrix(self):
        return self.matrix, self.pairs


class FakeDb:
    def __init__(self, facts):
        self.facts = facts

    def fact_count(self):
        return self.facts


def test_round_trip_passes_on_exact_values_and_fails_on_one_ulp():
    store = FakeUsGaapStore()
    assert checks.evaluate_scaler_round_trip(store).passed
    store.scaled[17] = np.nextafter(store.scaled[17], np.inf)  # one ulp off
    result = checks.evaluate_scaler_round_trip(store, sample_size=store.get_triplet_count())
    assert not result.passed
    assert result.metadata["mismatches"].value == 1
    assert "17" in result.metadata["first_mismatches"].value


def test_round_trip_fails_on_an_empty_store():
    store = FakeUsGaapStore(n_pairs=0)
    assert not checks.evaluate_scaler_round_trip(store).passed


@pytest.mark.parametrize("column", ["unscaled", "scaled"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_fail(column, bad):
    store = FakeUsGaapStore()
    assert checks.evaluate_triplets_finite(store, chunk=16).passed
    getattr(store, column)[50] = bad
    result = checks.evaluate_triplets_finite(store, chunk=16)
    assert not result.passed
    assert result.metadata[f"non_finite_{column}"].value == 1
    assert result.metadata["first_bad_cells"].value == "[50]"


def test_triplet_count_must_equal_ingested_facts():
    store = FakeUsGaapStore()
    assert checks.evaluate_triplet_count(store, FakeDb(store.get_triplet_count())).passed
    result = checks.evaluate_triplet_count(store, FakeDb(store.get_triplet_count() + 1))
    assert not result.passed
    assert result.metadata["difference"].value == -1


def test_every_pair_needs_an_embedding_and_a_scaler():
    store = FakeUsGaapStore()
    assert checks.evaluate_pairs_complete(store).passed
    store.scalers[1] = None
    assert not checks.evaluate_pairs_complete(store).passed
    store = FakeUsGaapStore()
    store.matrix = store.matrix[:-1]
    assert not checks.evaluate_pairs_complete(store).passed
    store = FakeUsGaapStore()
    store.matrix[2, 0] = np.nan
    result = checks.evaluate_pairs_complete(store)
    assert not result.passed and result.metadata["non_finite_embeddings"].value == 1


def test_pca_variance_check():
    assert checks.evaluate_pca_variance(0.951, 12, 0.95).passed
    failed = checks.evaluate_pca_variance(0.90, 12, 0.95)
    assert not failed.passed and failed.metadata["configured_variance"].value == 0.95
    assert checks.evaluate_pca_variance(0.5, 8, None, 8).passed
    assert not checks.evaluate_pca_variance(0.5, 7, None, 8).passed


def test_store_errors_fail_the_check_with_the_reason():
    def stale():
        raise RuntimeError("scalers were refitted after the scaled values were written")

    result = checks._failed_on_error(stale)
    assert not result.passed and "refitted" in result.metadata["error"].value


def test_all_store_checks_are_blocking():
    for check in checks.ALL_CHECKS:
        spec = next(iter(check.check_specs))
        assert spec.blocking, spec.name
        assert spec.asset_key.to_user_string() == "triplets"
