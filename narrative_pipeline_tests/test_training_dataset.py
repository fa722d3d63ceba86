"""IterableConceptValueDataset: batch contents, exactly-once epochs across workers, split stability.

`FakeUsGaapStore` is a small in-memory stand-in with the UsGaapStore read methods the training
code uses (so these tests run without the data layer); other training tests import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from narrative_pipeline.training import IterableConceptValueDataset, collate_with_scaler
from narrative_pipeline.training.dataset import split_fraction_of, split_mask


@dataclass
class FakeCellArrays:
    i_cell: np.ndarray
    pair_id: np.ndarray
    unscaled: np.ndarray
    scaled: np.ndarray
    cell_key: np.ndarray
    ticker_id: np.ndarray


class FakeUsGaapStore:
    """In-memory stand-in for UsGaapStore's read path: random pairs, values and fitted scalers."""

    def __init__(
        self,
        n_cells: int = 1000,
        n_pairs: int = 12,
        dim: int = 6,
        seed: int = 0,
        n_tickers: int = 8,
    ):
        rng = np.random.default_rng(seed)
        self.tickers = [f"TK{t}" for t in range(n_tickers)]
        self.ticker_id = (np.arange(n_cells) * 7 // 3 % n_tickers).astype(np.uint32)
        self.matrix = rng.normal(size=(n_pairs, dim)).astype(np.float32)
        self.pairs = [(f"Concept{p}", "USD") for p in range(n_pairs)]
        pair_id = np.arange(n_cells) % n_pairs  # every pair has cells
        rng.shuffle(pair_id)
        # Each pair's values live on its own scale, as in real filings.
        unscaled = np.exp(rng.normal(loc=pair_id % 7 + 10, scale=1.0)) * np.where(
            pair_id % 5 == 0, -1, 1
        )
        self.scalers = [
            StandardScaler().fit(unscaled[pair_id == p].reshape(-1, 1)) for p in range(n_pairs)
        ]
        scaled = np.empty(n_cells)
        for p in range(n_pairs):
            mask = pair_id == p
            scaled[mask] = self.scalers[p].transform(unscaled[mask].reshape(-1, 1)).ravel()
        self.pair_id = pair_id.astype(np.uint32)
        self.unscaled = unscaled
        self.scaled = scaled
        self.cell_key = fake_cell_keys(np.arange(n_cells))

    def add_cells(self, n_new: int, seed: int = 1) -> None:
        """Append cells (new ids, new keys) the way a later ingestion would."""
        rng = np.random.default_rng(seed)
        n_old = len(self.pair_id)
        pair_id = rng.integers(0, len(self.pairs), n_new).astype(np.uint32)
        self.pair_id = np.concatenate([self.pair_id, pair_id])
        self.unscaled = np.concatenate([self.unscaled, rng.normal(size=n_new) * 1e6])
        self.scaled = np.concatenate([self.scaled, rng.normal(size=n_new)])
        self.cell_key = np.concatenate([self.cell_key, fake_cell_keys(np.arange(n_new) + n_old)])
        new_tickers = rng.integers(0, len(self.tickers), n_new).astype(np.uint32)
        self.ticker_id = np.concatenate([self.ticker_id, new_tickers])

    def get_triplet_count(self) -> int:
        return len(self.pair_id)

    def get_embedding_matrix(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        return self.matrix, list(self.pairs)

    def get_tickers(self) -> list[str]:
        return list(self.tickers)

    def load_scalers(self) -> list:
        return list(self.scalers)

    def iterate_concept_unit_pairs(self):
        yield from enumerate(self.pairs)

    def read_cells(self, indices: np.ndarray) -> FakeCellArrays:
        idx = np.asarray(indices, dtype=np.int64)
        return FakeCellArrays(
            idx.astype(np.uint32), self.pair_id[idx], self.unscaled[idx], self.scaled[idx],
            self.cell_key[idx], self.ticker_id[idx],
        )  # fmt: skip

    def read_cell_range(self, start: int, stop: int) -> FakeCellArrays:
        return self.read_cells(np.arange(start, stop))


def fake_cell_keys(i_cell: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (i_cell.astype(np.uint64) + np.uint64(12345)) * np.uint64(0x9E3779B97F4A7C15)


class FakeStoreFactory:
    """Picklable factory, like the real one: every call (each worker) builds its own store."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def __call__(self) -> FakeUsGaapStore:
        return FakeUsGaapStore(**self.kwargs)


def collect_cells(dataset, num_workers: int = 0) -> np.ndarray:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return np.concatenate([batch["i_cell"].numpy() for batch in loader])


def test_batches_hold_pair_embedding_and_scaled_value():
    store = FakeUsGaapStore(n_cells=300, dim=5)
    dataset = IterableConceptValueDataset(
        lambda: store, split="all", batch_size=64, internal_batch_size=100
    )
    batches = list(dataset)
    assert [len(b["x"]) for b in batches] == [64, 64, 64, 64, 44]  # remainders carried over
    for batch in batches:
        assert batch["x"].dtype == torch.float32 and batch["x"].shape[1] == 6
        i_cell = batch["i_cell"].numpy()
        np.testing.assert_array_equal(batch["pair_id"].numpy(), store.pair_id[i_cell])
        np.testing.assert_allclose(batch["x"][:, :5].numpy(), store.matrix[store.pair_id[i_cell]])
        np.testing.assert_allclose(batch["x"][:, 5].numpy(), store.scaled[i_cell], rtol=1e-6)
        np.testing.assert_allclose(batch["unscaled"].numpy(), store.unscaled[i_cell])


@pytest.mark.parametrize("split", ["train", "val"])
def test_epoch_visits_every_cell_once_across_two_workers(split):
    factory = FakeStoreFactory(n_cells=5000)
    dataset = IterableConceptValueDataset(
        factory, split=split, val_fraction=0.2, batch_size=128, internal_batch_size=700, seed=3
    )
    seen = collect_cells(dataset, num_workers=2)
    store = factory()
    expected = np.flatnonzero(split_mask(store.cell_key, split, 0.2))
    assert len(seen) == len(np.unique(seen)), "a cell was delivered twice in one epoch"
    np.testing.assert_array_equal(np.sort(seen), expected)


def test_train_and_val_partition_all_cells_near_the_requested_fraction():
    factory = FakeStoreFactory(n_cells=4000)
    train = collect_cells(IterableConceptValueDataset(factory, split="train", val_fraction=0.25))
    val = collect_cells(IterableConceptValueDataset(factory, split="val", val_fraction=0.25))
    assert not set(train) & set(val)
    assert len(train) + len(val) == 4000
    assert 0.2 < len(val) / 4000 < 0.3


def test_shuffle_changes_with_epoch_and_repeats_with_seed():
    factory = FakeStoreFactory(n_cells=2000)
    dataset = IterableConceptValueDataset(factory, batch_size=100, internal_batch_size=300)
    epoch0 = collect_cells(dataset)
    dataset.set_epoch(1)
    epoch1 = collect_cells(dataset)
    dataset.set_epoch(0)
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(np.sort(epoch0), np.sort(epoch1))
    np.testing.assert_array_equal(epoch0, collect_cells(dataset))
    unshuffled = IterableConceptValueDataset(factory, shuffle=False, batch_size=100)
    seen = collect_cells(unshuffled)
    np.testing.assert_array_equal(seen, np.sort(seen))


def test_split_membership_never_changes_when_cells_are_added():
    store = FakeUsGaapStore(n_cells=3000)
    before = collect_cells(IterableConceptValueDataset(lambda: store, split="val"))
    store.add_cells(2000)
    after = collect_cells(IterableConceptValueDataset(lambda: store, split="val"))
    old_after = after[after < 3000]
    np.testing.assert_array_equal(np.sort(old_after), np.sort(before))
    assert (after >= 3000).any(), "new cells should join the split too"


def test_split_fraction_is_uniform_and_depends_on_key_only():
    keys = fake_cell_keys(np.arange(100_000))
    fractions = split_fraction_of(keys)
    assert fractions.min() >= 0 and fractions.max() < 1
    assert abs(fractions.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(split_fraction_of(keys[50:60]), fractions[50:60])


def test_return_scaler_samples_collate_to_lists():
    store = FakeUsGaapStore(n_cells=200, dim=4)
    dataset = IterableConceptValueDataset(lambda: store, split="all", return_scaler=True)
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_with_scaler)
    batch = next(iter(loader))
    assert batch["x"].shape == (32, 5)
    assert isinstance(batch["scaler"], list) and len(batch["scaler"]) == 32
    assert isinstance(batch["concept"], list) and isinstance(batch["unit"], list)
    for k in range(32):
        p = int(batch["pair_id"][k])
        assert batch["scaler"][k] is store.scalers[p]
        assert (batch["concept"][k], batch["unit"][k]) == store.pairs[p]
        back = batch["scaler"][k].inverse_transform([[float(batch["x"][k, -1])]])[0][0]
        assert back == pytest.approx(float(batch["unscaled"][k]), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{"split": "test"}, {"val_fraction": 1.0}, {"batch_size": 0}, {"internal_batch_size": 0}],
)
def test_bad_dataset_arguments_fail_clearly(kwargs):
    with pytest.raises(ValueError):
        IterableConceptValueDataset(FakeStoreFactory(), **kwargs)
