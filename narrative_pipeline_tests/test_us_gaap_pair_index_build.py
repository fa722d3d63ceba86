"""Step 2's full build with the one-pass per-pair value index (us_gaap/pair_index_build.py),
the decode in the read-ahead thread, cached pair ids and background store writes: what is
stored equals the straightforward computation from the cells, whatever the bucketing, the
spilling to temporary files and the chunk size; the sort and id helpers against references."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.db.fact_readback import PairTable
from narrative_pipeline.us_gaap import build, layout, pair_index_build
from narrative_pipeline.us_gaap.generations import StoreState
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_fakes import FakeDictStore, sqlite_facts_db


def _corpus(seed: int = 3) -> pd.DataFrame:
    """~6k facts over 90 pairs with many equal values (zeros, -0.0, values repeated across
    filings and tickers), the filings of a ticker out of accn order, some facts left out."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in rng.permutation(15):
        for f in rng.permutation(9):
            for c in range(30):
                for unit in ("USD", "shares", "pure")[: 1 + c % 3]:
                    if rng.random() < 0.25:
                        continue
                    value = float(np.round(rng.lognormal(3, 2), 0)) * rng.choice([1, -1])
                    if rng.random() < 0.2:
                        value = rng.choice([0.0, -0.0, 7.0])
                    rows.append((f"T{t:02d}", f"0000-{f:02d}", f"Concept{c:02d}", unit, value))
    return pd.DataFrame(rows, columns=["ticker", "accn", "concept", "unit", "value"])


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> DbUsGaap:
    database = sqlite_facts_db(_corpus(), tmp_path_factory.mktemp("db") / "facts.sqlite")
    yield database
    database.close()


def _build(db: DbUsGaap) -> tuple[FakeDictStore, dict]:
    fake = FakeDictStore()
    UsGaapStore(fake).build_concept_unit_pairs(db)
    return fake, StoreState(fake, 4).manifest()["pending"]


def _reference_indexes(fake: FakeDictStore, record: dict) -> dict[int, tuple]:
    """Each pair's index computed the plain way: its cells in i_cell order, stably sorted by
    value, with the locator of each cell's (chunk, offset)."""
    table = StoreState(fake, 4).chunk_table(record)
    pair_ids, values, locators = [], [], []
    for pos, cols in build.iter_chunk_columns(fake, table, ("pair_id", "unscaled")):
        pair_ids.append(cols["pair_id"])
        values.append(cols["unscaled"])
        offsets = np.arange(len(cols["pair_id"]), dtype=np.uint64)
        generation, chunk = int(table.generation[pos]), int(table.chunk[pos])
        locators.append(layout.encode_locators(generation, chunk, offsets))
    pair_id, value, locator = map(np.concatenate, (pair_ids, values, locators))
    out = {}
    for pair in np.unique(pair_id).tolist():
        cells = np.flatnonzero(pair_id == pair)
        order = cells[np.argsort(value[cells], kind="stable")]
        out[pair] = (value[order], locator[order])
    return out


@pytest.mark.parametrize(
    ("chunk_shift", "bucket_cells", "spill_bytes"),
    [(16, 1_000_000, 64 << 20), (9, 700, 1), (9, 2_500, 20_000), (10, 100_000, 1)],
)
def test_pair_indexes_equal_the_plain_computation(
    db: DbUsGaap, monkeypatch, tmp_path: Path, chunk_shift: int, bucket_cells: int, spill_bytes: int
) -> None:
    monkeypatch.setattr(layout, "CHUNK_SHIFT", chunk_shift)
    monkeypatch.setattr(layout, "CHUNK_CELLS", 1 << chunk_shift)
    monkeypatch.setattr(pair_index_build, "BUCKET_CELLS", bucket_cells)
    monkeypatch.setattr(pair_index_build, "SPILL_BUFFER_BYTES", spill_bytes)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fake, record = _build(db)
    expected = _reference_indexes(fake, record)
    assert len(expected) == record["n_pairs"] > 50
    assert record["n_cells"] == db.fact_count() > 4000
    for pair, (values, locators) in expected.items():
        payload = fake.data[layout.pair_index_key(record["generation"], pair)]
        got_values, got_locators = layout.decode_pair_index(payload)
        np.testing.assert_array_equal(got_values, values)
        np.testing.assert_array_equal(got_locators, locators)
        assert np.array_equal(np.signbit(got_values), np.signbit(values))  # -0.0 kept as is
    assert not list(tmp_path.iterdir())  # the spill files are gone


def test_every_stored_key_is_the_same_whatever_the_bucketing(db: DbUsGaap, monkeypatch) -> None:
    whole, _ = _build(db)
    monkeypatch.setattr(pair_index_build, "BUCKET_CELLS", 333)
    monkeypatch.setattr(pair_index_build, "SPILL_BUFFER_BYTES", 1)
    bucketed, _ = _build(db)
    assert bucketed.data == whole.data  # cells, pair ids, tickers, tables and indexes


def test_a_failed_build_leaves_no_spill_files(db: DbUsGaap, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pair_index_build, "BUCKET_CELLS", 500)
    monkeypatch.setattr(pair_index_build, "SPILL_BUFFER_BYTES", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def fail(*_args, **_kwargs) -> None:
        assert list(tmp_path.iterdir())  # spilled by now
        raise OSError("disk full")

    monkeypatch.setattr(pair_index_build, "write_sorted_pair_indexes", fail)
    with pytest.raises(OSError, match="disk full"):
        _build(db)
    assert not list(tmp_path.iterdir())


def test_a_spill_that_fails_fails_the_build_and_cleans_up(
    db: DbUsGaap, monkeypatch, tmp_path: Path
) -> None:
    """An error on the bucketing thread (here: the disk fills while spilling) reaches the
    build, which leaves neither spill files nor a pending generation behind."""
    monkeypatch.setattr(pair_index_build, "BUCKET_CELLS", 500)
    monkeypatch.setattr(pair_index_build, "SPILL_BUFFER_BYTES", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spill = pair_index_build.PairIndexCells._spill

    def spill_then_fail(self) -> None:
        spill(self)
        raise OSError("no space left on device")

    monkeypatch.setattr(pair_index_build.PairIndexCells, "_spill", spill_then_fail)
    fake = FakeDictStore()
    with pytest.raises(OSError, match="no space left"):
        UsGaapStore(fake).build_concept_unit_pairs(db)
    assert not list(tmp_path.iterdir())
    assert StoreState(fake, 4).manifest()["pending"] is None


def test_sort_by_pair_then_value_is_the_stable_lexsort() -> None:
    rng = np.random.default_rng(1)
    for top, n in ((50, 20_000), (70_000, 20_000), (3, (1 << 21) + 5)):  # one key; 2 fallbacks
        pairs = rng.integers(0, top, n).astype(np.uint32)
        values = rng.choice([0.0, -0.0, 1.5, -2.0, 1e300, -1e-300, 3.0], n)
        values[: n // 2] = rng.normal(size=n // 2)
        order = pair_index_build.sort_by_pair_then_value(pairs, values)
        np.testing.assert_array_equal(order, np.lexsort((values, pairs)))  # stable: ties by index


def test_cached_pair_ids_equal_the_string_path(db: DbUsGaap) -> None:
    """One assigner over every group (positions cached) numbers pairs as a fresh string-keyed
    assignment of the same frames does."""
    cached, by_strings = build.PairAssigner(), build.PairAssigner()
    groups = list(db.iter_fact_codes(700))
    assert len(groups) > 3
    for codes in groups:
        frame = codes.frame()
        np.testing.assert_array_equal(
            cached.assign_codes(codes), by_strings.assign(frame["concept"], frame["unit"])
        )
    assert cached.pairs == by_strings.pairs
    assert (
        cached.assign_codes(db.fact_codes()).tolist()
        == by_strings.assign(db.facts_frame()["concept"], db.facts_frame()["unit"]).tolist()
    )  # another table object: the cache is rebuilt, ids stay


def test_pair_table_positions_with_sparse_ids() -> None:
    rows = [(5, "A", "USD"), (9, "B", "USD"), (100_000, "A", "EUR")]
    table = PairTable(rows)
    ids = np.array([100_000, 5, 9, 9], dtype=np.int64)
    np.testing.assert_array_equal(table.positions(ids), [2, 0, 1, 1])
    np.testing.assert_array_equal(table.rank, [1, 2, 0])  # (A, EUR) < (A, USD) < (B, USD)
    dense = PairTable([(i, f"C{i}", "USD") for i in range(1, 50)])
    np.testing.assert_array_equal(dense.positions(np.array([49, 1, 7])), [48, 0, 6])


class _FailingStore(FakeDictStore):
    def batch_write(self, entries: list[tuple[bytes, bytes]]) -> int:
        if any(key == b"bad" for key, _ in entries):
            raise OSError("write refused")
        return super().batch_write(entries)


def test_background_writes_keep_the_order_and_raise_errors() -> None:
    direct, store = FakeDictStore(), FakeDictStore()
    writes = build.BackgroundWrites(store, depth=2)
    for k in range(50):
        batch = [(f"k{k % 7}".encode(), f"v{k}".encode()), (f"n{k}".encode(), b"x")]
        writes.batch_write(batch)
        direct.batch_write(batch)
    writes.close()
    assert list(store.data.items()) == list(direct.data.items())  # later writes won, in order
    failing = build.BackgroundWrites(_FailingStore())
    with pytest.raises(OSError, match="write refused"):  # by the next call or by close
        try:
            failing.batch_write([(b"bad", b"1")])
        finally:
            failing.close()
