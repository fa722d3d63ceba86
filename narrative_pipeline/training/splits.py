"""Which cells a model may learn from: whole held-out tickers, then the cell-key validation split.

Held-out tickers measure what a user cares about (a company the model never saw); the cell-key
split measures interpolation inside known filings. Both are stable: a ticker's side depends on
its symbol alone (a hash), a cell's on its stable key alone, so adding data never moves a cell
from the evaluation side into training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from xxhash import xxh3_64_intdigest

Split = Literal["train", "val", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "val", "heldout", "all")


def ticker_fraction(ticker: str) -> float:
    """A stable uniform float in [0, 1) for a ticker symbol (xxh3_64 of its UTF-8 bytes)."""
    return xxh3_64_intdigest(ticker.encode()) / float(1 << 64)


def resolve_heldout_tickers(
    tickers: Sequence[str], explicit: Sequence[str], fraction: float
) -> list[str]:
    """The tickers kept out of training.

    `explicit` wins when non-empty. Otherwise each ticker whose hash falls below `fraction` is
    held out; with a positive fraction at least one ticker is held out (the lowest hash) and at
    least one is kept for training, so a small store still gets an honest held-out measurement.
    """
    if explicit:
        return sorted({str(t) for t in explicit})
    if fraction <= 0 or len(tickers) < 2:
        return []
    by_hash = sorted(set(tickers), key=ticker_fraction)
    chosen = [t for t in by_hash if ticker_fraction(t) < fraction] or by_hash[:1]
    return sorted(chosen[: len(by_hash) - 1])


def heldout_ticker_ids(tickers: Sequence[str], heldout: Sequence[str]) -> np.ndarray:
    """Ids (positions in the store's ticker list) of the held-out tickers present there."""
    wanted = set(heldout)
    return np.asarray([i for i, t in enumerate(tickers) if t in wanted], dtype=np.int64)


def cell_split_fraction(cell_keys: np.ndarray) -> np.ndarray:
    """Map stable u64 cell keys to uniform floats in [0, 1) with the splitmix64 finaliser.

    The value depends on the key alone, so a cell never changes side when new cells arrive.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(cell_keys, dtype=np.uint64).copy()
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_mask(
    cell_keys: np.ndarray,
    split: Split,
    val_fraction: float,
    ticker_id: np.ndarray | None = None,
    heldout_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the cells that belong to `split`.

    "heldout": cells of held-out tickers; "train" / "val": the other cells, split by cell key;
    "all": every cell. Held-out ids need the cells' `ticker_id`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = len(cell_keys)
    if split == "all":
        return np.ones(n, dtype=bool)
    heldout = np.zeros(n, dtype=bool)
    if heldout_ids is not None and len(heldout_ids):
        if ticker_id is None:
            raise ValueError("held-out tickers need the cells' ticker_id (rebuild the store)")
        heldout = np.isin(np.asarray(ticker_id, dtype=np.int64), heldout_ids)
    if split == "heldout":
        return heldout
    is_val = cell_split_fraction(cell_keys) < val_fraction
    return (is_val if split == "val" else ~is_val) & ~heldout
