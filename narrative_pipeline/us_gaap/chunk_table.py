"""The chunk table of a generation: which stored chunks hold its cells, in i_cell order.

A full build writes chunks 0..n-1 of its own generation, `CHUNK_CELLS` cells each (the last may
be shorter). An incremental update keeps every chunk that holds none of the changed tickers,
rewrites the few that do (without those tickers' cells) and appends the changed tickers' new
chunks, all under its own generation number; so the table mixes chunks of several generations
and chunks need not be full. i_cell k lives in the chunk whose [start, start + size) holds k.

Per chunk the table also keeps the smallest and largest ticker id in it, so an update finds the
chunks of a ticker without reading any cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from narrative_pipeline.us_gaap import layout

_FIELDS = ("generation", "chunk", "size", "ticker_min", "ticker_max")


@dataclass
class ChunkTable:
    """Rows of (generation, chunk number, size, smallest ticker id, largest ticker id)."""

    generation: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    chunk: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ticker_min: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    ticker_max: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))

    def __post_init__(self) -> None:
        self.starts = np.concatenate([[0], np.cumsum(self.size)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.size)

    @property
    def n_cells(self) -> int:
        return int(self.starts[-1])

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, int, int, int]]) -> ChunkTable:
        cols: list[tuple[int, ...]] = (
            list(zip(*rows, strict=True)) if rows else [() for _ in _FIELDS]
        )
        return cls(
            np.asarray(cols[0], np.uint32),
            np.asarray(cols[1], np.uint32),
            np.asarray(cols[2], np.int64),
            np.asarray(cols[3], np.uint32),
            np.asarray(cols[4], np.uint32),
        )

    def rows(self) -> list[tuple[int, int, int, int, int]]:
        return list(
            zip(
                *(getattr(self, name).tolist() for name in _FIELDS),
                strict=True,
            )
        )

    def encode(self) -> bytes:
        return layout.encode_json({name: getattr(self, name).tolist() for name in _FIELDS})

    @classmethod
    def decode(cls, payload: bytes) -> ChunkTable:
        data = layout.decode_json(payload)
        return cls.from_rows(list(zip(*(data[name] for name in _FIELDS), strict=True)))

    def position_of(self, i_cells: np.ndarray) -> np.ndarray:
        """Table position of the chunk holding each i_cell."""
        return np.searchsorted(self.starts, i_cells, side="right") - 1

    def refs(self) -> np.ndarray:
        """`layout.chunk_ref` of every row, in table order."""
        return (self.generation.astype(np.uint64) << np.uint64(layout.LOCATOR_CHUNK_BITS)) | (
            self.chunk.astype(np.uint64)
        )

    def i_cells_of(self, locators: np.ndarray) -> np.ndarray:
        """i_cell of each locator (raises KeyError for a chunk not in this table)."""
        refs = self.refs()
        order = np.argsort(refs)
        wanted = layout.locator_chunks(locators)
        pos = np.searchsorted(refs[order], wanted)
        pos = np.minimum(pos, len(refs) - 1)
        if len(refs) == 0 or np.any(refs[order][pos] != wanted):
            raise KeyError("a locator names a chunk outside the live chunk table")
        offsets = np.asarray(locators, np.uint64) & np.uint64((1 << layout.LOCATOR_OFFSET_BITS) - 1)
        return self.starts[order[pos]] + offsets.astype(np.int64)

    def positions_with_tickers(self, ticker_ids: np.ndarray) -> np.ndarray:
        """Positions of the chunks whose ticker range may hold any of `ticker_ids`."""
        if not len(ticker_ids) or not len(self):
            return np.zeros(0, np.int64)
        ids = np.sort(np.asarray(ticker_ids, np.int64))
        first = np.searchsorted(ids, self.ticker_min.astype(np.int64), side="left")
        last = np.searchsorted(ids, self.ticker_max.astype(np.int64), side="right")
        return np.flatnonzero(last > first)
