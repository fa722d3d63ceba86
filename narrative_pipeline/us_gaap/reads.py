"""Reads of the live generation: cell columns by index or range (the training loader's path),
`Cell` lookups by index and by (concept, unit, value), pairs, tickers, PCA embeddings.

Cells are gathered through the chunk cache; i_cell -> chunk goes through the live chunk table
(chunks need not be full after an incremental update). Only the live generation is read.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from narrative_pipeline.us_gaap import layout
from narrative_pipeline.us_gaap.cells import Cell, CellArrays
from narrative_pipeline.us_gaap.generations import StoreState


def empty_cells() -> CellArrays:
    return CellArrays(
        i_cell=np.zeros(0, dtype=np.int64),
        **{n: np.zeros(0, dtype=d) for n, d in layout.CELL_COLUMNS.items()},
    )


def _slots(state: StoreState, record: dict, positions: list[int]) -> list[int]:
    owner = (record["generation"], record["scalers"]["fingerprint"])
    return state.cache.slots_for(
        state.data_store,
        owner,
        state.chunk_table(record),
        positions,
        lambda pid, unscaled: state.scale_chunk(record, pid, unscaled),
    )


def read_cell_range(state: StoreState, start: int, stop: int) -> CellArrays:
    """Columns of cells start..stop-1 (clipped to the live count), as numpy arrays."""
    live = state.require_fresh_triplets()
    start, stop = max(0, int(start)), min(int(stop), live["n_cells"])
    if stop <= start:
        return empty_cells()
    table = state.chunk_table(live)
    out = {name: np.empty(stop - start, dtype=dtype) for name, dtype in layout.CELL_COLUMNS.items()}
    first, last = table.position_of(np.array([start, stop - 1])).tolist()
    positions = list(range(first, last + 1))
    capacity = state.cache.capacity
    for group in range(0, len(positions), capacity):
        batch = positions[group : group + capacity]
        for pos, slot in zip(batch, _slots(state, live, batch), strict=True):
            base = int(table.starts[pos])
            lo, hi = max(start, base), min(stop, int(table.starts[pos + 1]))
            for name in layout.CELL_COLUMNS:
                out[name][lo - start : hi - start] = state.cache.loaded[name][
                    slot, lo - base : hi - base
                ]
    return CellArrays(i_cell=np.arange(start, stop, dtype=np.int64), **out)


def read_cells(state: StoreState, indices: Sequence[int] | np.ndarray) -> CellArrays:
    """Columns of the given cells, in the order given (repeats allowed)."""
    live = state.require_fresh_triplets()
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        return empty_cells()
    n_cells = live["n_cells"]
    if idx.min() < 0 or idx.max() >= n_cells:
        bad = idx[(idx < 0) | (idx >= n_cells)][0]
        raise IndexError(f"cell index {bad} out of range 0..{n_cells - 1}")
    table = state.chunk_table(live)
    chunk_of = table.position_of(idx)
    offset = idx - table.starts[chunk_of]
    chunk_ids = np.flatnonzero(np.bincount(chunk_of, minlength=len(table)))
    capacity = state.cache.capacity
    if len(chunk_ids) <= capacity:
        return CellArrays(i_cell=idx, **_gather(state, live, offset, chunk_of, chunk_ids))
    # More chunks than the cache holds: gather a cache-full of chunks at a time.
    out = {name: np.empty(idx.size, dtype=dtype) for name, dtype in layout.CELL_COLUMNS.items()}
    order = np.argsort(chunk_of, kind="stable")
    bounds = np.searchsorted(chunk_of[order], chunk_ids[::capacity])
    bounds = np.append(bounds, idx.size)
    for k in range(len(bounds) - 1):
        positions = order[bounds[k] : bounds[k + 1]]
        group_ids = np.unique(chunk_of[positions])
        part = _gather(state, live, offset[positions], chunk_of[positions], group_ids)
        for name in layout.CELL_COLUMNS:
            out[name][positions] = part[name]
    return CellArrays(i_cell=idx, **out)


def _gather(
    state: StoreState, record: dict, offset: np.ndarray, chunk_of: np.ndarray, chunk_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Cell columns at (chunk, offset), all of whose chunks (`chunk_ids`) fit in the cache."""
    slots = _slots(state, record, chunk_ids.tolist())
    slot_of_chunk = np.zeros(int(chunk_ids[-1]) + 1, dtype=np.int64)
    slot_of_chunk[chunk_ids] = slots
    flat = slot_of_chunk[chunk_of] * layout.CHUNK_CELLS + offset
    return {name: state.cache.loaded[name].reshape(-1)[flat] for name in layout.CELL_COLUMNS}


def batch_lookup_by_indices(state: StoreState, indices: Sequence[int] | np.ndarray) -> list[Cell]:
    """One `Cell` per index: arrays are fetched for all indices at once, then objects built."""
    cells = read_cells(state, indices)
    live = state.require_live()  # read_cells required fresh triplets of it
    pairs = state.pairs(live)
    scalers = state.scalers(live)
    rows = embedding_rows(state, live)
    with _gc_paused():  # hundreds of thousands of new objects would trigger needless GC passes
        return [
            Cell(i, p, pairs[p][0], pairs[p][1], u, s, rows[p], scalers[p], k)
            for i, p, u, s, k in zip(
                cells.i_cell.tolist(),
                cells.pair_id.tolist(),
                cells.unscaled.tolist(),
                cells.scaled.tolist(),
                cells.cell_key.tolist(),
                strict=True,
            )
        ]


def embedding_rows(state: StoreState, record: dict) -> list:
    """Per pair, its PCA-reduced embedding row (None for every pair when no PCA is stored)."""
    pca = record.get("pca")
    if not pca:
        return [None] * record["n_pairs"]
    key = ("rows", record["generation"], pca["fingerprint"])
    if key not in state.memo:
        state.memo[key] = list(state.reduced(record))
    return state.memo[key]


def lookup_by_triplet(state: StoreState, concept: str, uom: str, value: float) -> Cell:
    """The cell holding this (concept, unit, value); the first by i_cell if several do."""
    live = state.require_fresh_triplets()
    ids = state.pair_ids(live)
    pair_id = ids.get((concept, uom.upper()), ids.get((concept, uom)))
    if pair_id is not None and state.pair_counts(live)[pair_id] > 0:
        values, locators = state.pair_index(live, pair_id)
        lo = int(np.searchsorted(values, float(value), side="left"))
        hi = int(np.searchsorted(values, float(value), side="right"))
        if hi > lo:
            i_cells = state.chunk_table(live).i_cells_of(locators[lo:hi])
            return batch_lookup_by_indices(state, [int(i_cells.min())])[0]
    raise KeyError(f"triplet ({concept!r}, {uom!r}, {value!r}) not found")


def get_embedding_matrix(state: StoreState) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(PCA-reduced embeddings float64 [n_pairs, k], [(concept, unit)] by pair_id)."""
    live = state.require_live()
    pca = live.get("pca")
    embeddings = live.get("embeddings")
    if not pca or not embeddings or pca["embeddings_fingerprint"] != embeddings["fingerprint"]:
        raise RuntimeError(
            "no PCA embeddings for the live pairs: run generate_embeddings() and fit_pca()"
        )
    return state.reduced(live), [(c, u) for c, u in state.pairs(live)]


def get_tickers(state: StoreState) -> list[str]:
    """Ticker symbol of every ticker id of the live generation (`CellArrays.ticker_id`)."""
    live = state.live()
    return [] if live is None else list(state.ticker_table(live)["tickers"])


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
