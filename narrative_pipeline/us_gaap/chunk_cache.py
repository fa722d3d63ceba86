"""Decoded cell chunks kept in preallocated slot arrays, least recently used evicted first.

All slots of a column live in one 2-D array, so gathering cells spread over many cached chunks
is a single fancy index per column (no sorting of the requested indices).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from narrative_pipeline.us_gaap import build, layout


class ChunkCache:
    """Up to `capacity` chunks of one generation; memory is capacity x 32 bytes x CHUNK_CELLS."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.clear()

    def clear(self) -> None:
        self.generation: int | None = None
        self.columns: dict[str, np.ndarray] | None = None
        self.slots: OrderedDict[int, int] = OrderedDict()  # chunk -> slot, oldest first

    def _reset_for(self, generation: int, n_chunks: int) -> None:
        if self.generation == generation and self.columns is not None:
            return
        n_slots = min(self.capacity, max(1, n_chunks))
        self.columns = {
            name: np.empty((n_slots, layout.CHUNK_CELLS), dtype=dtype)
            for name, dtype in layout.CELL_COLUMNS.items()
        }
        self.slots = OrderedDict()
        self.generation = generation

    @property
    def n_slots(self) -> int:
        return 0 if self.columns is None else len(self.columns["pair_id"])

    def slots_for(self, store: Any, record: dict, chunks: list[int]) -> list[int]:
        """Slot of each chunk (loading the missing ones); `len(chunks)` must not exceed the slots."""
        self._reset_for(record["generation"], record["n_chunks"])
        if len(chunks) > self.n_slots:
            raise ValueError(f"{len(chunks)} chunks requested, cache holds {self.n_slots}")
        missing = [c for c in chunks if c not in self.slots]
        wanted = set(chunks)
        for first in range(0, len(missing), build.CHUNKS_PER_READ):
            batch = missing[first : first + build.CHUNKS_PER_READ]
            decoded = build.read_columns(
                store, record["generation"], tuple(layout.CELL_COLUMNS), batch
            )
            for chunk, cols in zip(batch, decoded, strict=True):
                slot = self._free_slot(wanted)
                for name, values in cols.items():
                    self.columns[name][slot, : len(values)] = values
                self.slots[chunk] = slot
        for chunk in chunks:
            self.slots.move_to_end(chunk)
        return [self.slots[c] for c in chunks]

    def _free_slot(self, keep: set[int]) -> int:
        used = set(self.slots.values())
        if len(used) < self.n_slots:
            return next(s for s in range(self.n_slots) if s not in used)
        victim = next(c for c in self.slots if c not in keep)
        return self.slots.pop(victim)
