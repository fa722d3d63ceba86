"""What lookups return: lightweight per-cell objects and column arrays for many cells."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class ConceptUnitPair(NamedTuple):
    """A (concept, unit of measure) pair; the original's field name for the unit was `uom`."""

    concept: str
    uom: str


class Cell:
    """One stored triplet with everything the original's lookup dicts carried.

    A small `__slots__` class so that building hundreds of thousands per second is cheap;
    `cell["scaled_value"]` also works, for code written against the original's dicts.
    """

    __slots__ = (
        "i_cell",
        "pair_id",
        "concept",
        "uom",
        "unscaled_value",
        "scaled_value",
        "embedding",
        "scaler",
        "cell_key",
    )

    def __init__(
        self,
        i_cell: int,
        pair_id: int,
        concept: str,
        uom: str,
        unscaled_value: float,
        scaled_value: float,
        embedding: np.ndarray | None,
        scaler: Any,
        cell_key: int,
    ) -> None:
        self.i_cell = i_cell
        self.pair_id = pair_id
        self.concept = concept
        self.uom = uom
        self.unscaled_value = unscaled_value
        self.scaled_value = scaled_value
        self.embedding = embedding
        self.scaler = scaler
        self.cell_key = cell_key

    def __getitem__(self, name: str) -> Any:
        if name not in self.__slots__:
            raise KeyError(name)
        return getattr(self, name)

    def __repr__(self) -> str:
        return (
            f"Cell(i_cell={self.i_cell}, pair_id={self.pair_id}, concept={self.concept!r}, "
            f"uom={self.uom!r}, unscaled_value={self.unscaled_value!r}, "
            f"scaled_value={self.scaled_value!r})"
        )


@dataclass(frozen=True)
class CellArrays:
    """Columns for a set of cells, aligned by position (the vectorised read path)."""

    i_cell: np.ndarray  # int64
    pair_id: np.ndarray  # uint32
    unscaled: np.ndarray  # float64
    scaled: np.ndarray  # float64
    cell_key: np.ndarray  # uint64, stable id of (ticker, accn, concept, unit): build.cell_key
    ticker_id: np.ndarray  # uint32, index into UsGaapStore.get_tickers()

    def __len__(self) -> int:
        return len(self.i_cell)
