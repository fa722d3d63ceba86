"""Decoded cell chunks kept in preallocated slot arrays, least recently used evicted first.

All slots of a column live in one 2-D array, so gathering cells spread over many cached chunks
is a single fancy index per column (no sorting of the requested indices). Chunks are named by
their position in the live chunk table; the scaled column is computed as a chunk is loaded,
with the live scalers (it is not stored).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from narrative_pipeline.store.protocol import KeyValueStore
from narrative_pipeline.us_gaap import build, layout
from narrative_pipeline.us_gaap.chunk_table import ChunkTable

ScaleChunk = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (pair_id, unscaled) -> scaled


class ChunkCache:
    """Up to `capacity` chunks of one generation; memory is capacity x 36 bytes x CHUNK_CELLS."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.clear()

    def clear(self) -> None:
        self.owner: tuple | None = None
        self.columns: dict[str, np.ndarray] | None = None
        self.slots: OrderedDict[int, int] = OrderedDict()  # table position -> slot, oldest first

    def _reset_for(self, owner: tuple, n_chunks: int) -> dict[str, np.ndarray]:
        """The slot arrays for `owner`'s chunks (new, empty ones when the owner changed)."""
        if self.owner == owner and self.columns is not None:
            return self.columns
        n_slots = min(self.capacity, max(1, n_chunks))
        self.columns = {
            name: np.empty((n_slots, layout.CHUNK_CELLS), dtype=dtype)
            for name, dtype in layout.CELL_COLUMNS.items()
        }
        self.slots = OrderedDict()
        self.owner = owner
        return self.columns

    @property
    def loaded(self) -> dict[str, np.ndarray]:
        """The slot arrays, for reading the slots `slots_for` returned (which allocates them)."""
        if self.columns is None:
            raise RuntimeError("chunk cache read before slots_for allocated its slots")
        return self.columns

    @property
    def n_slots(self) -> int:
        return 0 if self.columns is None else len(self.columns["pair_id"])

    def slots_for(
        self,
        store: KeyValueStore,
        owner: tuple,
        table: ChunkTable,
        positions: list[int],
        scale: ScaleChunk,
    ) -> list[int]:
        """Slot of each chunk (loading the missing ones); at most `n_slots` positions.

        `owner` names the generation and scalers the cached chunks belong to.
        """
        columns = self._reset_for(owner, len(table))
        if len(positions) > self.n_slots:
            raise ValueError(f"{len(positions)} chunks requested, cache holds {self.n_slots}")
        missing = [p for p in positions if p not in self.slots]
        wanted = set(positions)
        for first in range(0, len(missing), build.CHUNKS_PER_READ):
            batch = missing[first : first + build.CHUNKS_PER_READ]
            for pos, cols in build.iter_chunk_columns(store, table, layout.STORED_COLUMNS, batch):
                slot = self._free_slot(wanted)
                for name, values in cols.items():
                    columns[name][slot, : len(values)] = values
                n = len(cols["pair_id"])
                columns["scaled"][slot, :n] = scale(cols["pair_id"], cols["unscaled"])
                self.slots[pos] = slot
        for pos in positions:
            self.slots.move_to_end(pos)
        return [self.slots[p] for p in positions]

    def _free_slot(self, keep: set[int]) -> int:
        used = set(self.slots.values())
        if len(used) < self.n_slots:
            return next(s for s in range(self.n_slots) if s not in used)
        victim = next(c for c in self.slots if c not in keep)
        return self.slots.pop(victim)
