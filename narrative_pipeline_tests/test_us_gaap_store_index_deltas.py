"""Value-index deltas (us_gaap/index_deltas.py): an update writes, for each touched pair, the
cells added and the chunks dropped since the pair's full index instead of the whole index.

Against a full build of the same database after each add / change / remove: the same cells,
scalers bit for bit, and every pair's index read back (base + delta) equal to the full build's
index of that pair (same values, the same cells by cell key); deltas really used (and the
bases they need kept through the old generations' deletion); with DELTA_SHARE = 0 every
touched pair is written whole, with the same results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.us_gaap import index_deltas, layout
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_incremental import (  # noqa: F401 - fixtures
    OPTIONS,
    _check_against_full_build,
    _full_build,
    corpus,
    small_chunks,
)


def _index_by_key(store: UsGaapStore) -> dict[tuple[str, str], list[tuple[float, int]]]:
    """Each pair's index as (value, cell key) in index order, from the live record."""
    state = store._state
    live = state.live()
    table = state.chunk_table(live)
    cells = store.read_cell_range(0, store.get_triplet_count())
    pairs = state.pairs(live)
    counts = state.pair_counts(live)
    present = [p for p in range(live["n_pairs"]) if counts[p] > 0]
    out = {}
    for p, (values, locators) in zip(present, state.pair_indexes(live, present), strict=True):
        keys = cells.cell_key[table.i_cells_of(locators)]
        out[tuple(pairs[p])] = list(zip(values.tolist(), keys.tolist(), strict=True))
    return out


def _check_indexes(store: UsGaapStore, db, path: Path) -> None:
    full = _full_build(db, path)
    try:
        expected = _index_by_key(full)
        got = _index_by_key(store)
        assert got.keys() == expected.keys()
        for pair, entries in expected.items():
            assert [v for v, _ in got[pair]] == [v for v, _ in entries], pair  # sorted values
            assert sorted(got[pair]) == sorted(entries), pair  # the same cells
    finally:
        full.data_store.close()


def _updates(store: UsGaapStore, db, csv_dir: Path, tmp_path: Path) -> list[dict]:
    """Add XOM, change MSFT, remove NVDA; checks after each; the live records."""
    records = []
    generate_sample_csvs(csv_dir, tickers=["XOM"], filings_per_ticker=6)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    assert store.update_from_db(db, **OPTIONS).messages[-1].startswith("incremental: 1")
    records.append(store._state.live())
    _check_against_full_build(store, db, tmp_path / "full_add.bin")
    _check_indexes(store, db, tmp_path / "index_add.bin")

    generate_sample_csvs(csv_dir, tickers=["MSFT"], filings_per_ticker=4, seed=7)
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False, allow_shrink=True)
    assert store.update_from_db(db, **OPTIONS).messages[-1].startswith("incremental: 1")
    records.append(store._state.live())
    _check_against_full_build(store, db, tmp_path / "full_change.bin")
    _check_indexes(store, db, tmp_path / "index_change.bin")

    db.delete_ticker("NVDA")
    assert store.update_from_db(db, **OPTIONS).messages[-1].startswith("incremental: 0")
    records.append(store._state.live())
    _check_against_full_build(store, db, tmp_path / "full_remove.bin")
    _check_indexes(store, db, tmp_path / "index_remove.bin")
    return records


def test_updates_write_deltas_that_read_as_the_full_index(corpus, monkeypatch) -> None:  # noqa: F811
    store, db, csv_dir, tmp_path = corpus
    monkeypatch.setattr(index_deltas, "DELTA_SHARE", 10.0)  # a delta whenever there is a base
    first = store._state.live()["generation"]
    records = _updates(store, db, csv_dir, tmp_path)
    state = store._state
    live = records[-1]
    gens, bases = state.pair_index_generations(live), state.pair_index_bases(live)
    with_delta = np.flatnonzero(gens != bases)
    assert len(with_delta) > 10  # deltas were written, not whole indexes
    assert set(bases[with_delta].tolist()) == {first}  # against the full build's indexes
    for p in with_delta.tolist():  # the shared bases survived three generations' deletion
        assert store.data_store.read(layout.pair_index_key(first, p)) is not None
        assert store.data_store.read(layout.pair_index_key(int(gens[p]), p)) is None


def test_a_large_delta_is_written_whole(corpus, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    store, db, csv_dir, tmp_path = corpus
    monkeypatch.setattr(index_deltas, "DELTA_SHARE", 0.0)  # never a delta
    records = _updates(store, db, csv_dir, tmp_path)
    state = store._state
    for record in records[-1:]:  # every touched pair's full index is its own
        assert np.array_equal(state.pair_index_generations(record), state.pair_index_bases(record))
