"""Streaming Stage 1 training data straight from the UsGaapStore's columnar cell arrays.

The original loader built one Python object per sample over the network and starved the model.
Here each worker opens its own store, reads contiguous chunks of cells through the vectorised
read path (`read_cell_range`), and yields ready-made batch tensors, so the DataLoader itself does
no per-sample work (use it with `batch_size=None`). The per-sample path with scalers and
(concept, unit) is kept for analysis (`return_scaler=True` + `collate_with_scaler`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from narrative_pipeline.training.splits import (
    SPLITS,
    Split,
    cell_split_fraction,
    heldout_ticker_ids,
    split_mask,
)

if TYPE_CHECKING:
    from narrative_pipeline.us_gaap.store import UsGaapStore

split_fraction_of = cell_split_fraction  # the split rules live in splits.py

# Keys of a collated batch that are plain tensors; the rest (scaler, concept, unit) stay lists.
TENSOR_KEYS = ("x", "pair_id", "i_cell", "unscaled")
LIST_KEYS = ("scaler", "concept", "unit")


def shard_info() -> tuple[int, int]:
    """(this reader's index, number of readers) over DataLoader workers and distributed ranks."""
    worker = get_worker_info()
    worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return rank * num_workers + worker_id, world * num_workers


class IterableConceptValueDataset(IterableDataset):
    """Cells of one split as `x = [PCA embedding of the pair, scaled value]`, sharded by chunk.

    Every epoch visits each cell of the split exactly once across all workers: the chunk list
    (ranges of `internal_batch_size` cells) is permuted with the epoch's seed identically in every
    worker, and worker `w` of `n` takes chunks `w, w + n, ...`. Within a chunk the cells are
    shuffled with a seed derived from (seed, epoch, chunk). Call `set_epoch(e)` before iterating
    (the training loop does it) to change the order between epochs.

    Yields dicts: with `return_scaler=False`, collated batches of `batch_size` cells
    (`x` float32 [b, d+1], `pair_id`, `i_cell` int64, `unscaled` float64); with
    `return_scaler=True`, one sample at a time, adding `scaler`, `concept` and `unit`.
    """

    def __init__(
        self,
        store_factory: Callable[[], Any],
        *,
        split: Split = "train",
        val_fraction: float = 0.1,
        internal_batch_size: int = 65536,
        batch_size: int = 1024,
        shuffle: bool = True,
        seed: int = 0,
        return_scaler: bool = False,
        drop_last: bool = False,
        heldout_tickers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if internal_batch_size < 1 or batch_size < 1:
            raise ValueError(
                f"internal_batch_size and batch_size must be >= 1, got "
                f"{internal_batch_size} and {batch_size}"
            )
        self.store_factory = store_factory
        self.split = split
        self.val_fraction = float(val_fraction)
        self.internal_batch_size = int(internal_batch_size)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.return_scaler = return_scaler
        self.drop_last = drop_last
        self.heldout_tickers = tuple(heldout_tickers)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order of epoch `epoch` (call before creating the iterator)."""
        self.epoch = int(epoch)

    def chunk_ranges(self, n_cells: int) -> list[tuple[int, int]]:
        """The [start, stop) cell ranges this reader handles this epoch, in reading order."""
        n_chunks = math.ceil(n_cells / self.internal_batch_size)
        order = np.arange(n_chunks)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n_chunks)
        reader, n_readers = shard_info()
        step = self.internal_batch_size
        return [
            (int(c) * step, min(int(c) * step + step, n_cells)) for c in order[reader::n_readers]
        ]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        store = self.store_factory()
        embedding_table = self._embedding_table(store)
        chunks = self._split_chunks(store, embedding_table.shape[0])
        if self.return_scaler:
            yield from self._samples(store, embedding_table, chunks)
        else:
            yield from self._batches(embedding_table, chunks)

    @staticmethod
    def _embedding_table(store: UsGaapStore) -> np.ndarray:
        """Pair embeddings with one spare zero column that each batch fills with the value."""
        matrix, _pairs = store.get_embedding_matrix()
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValueError(f"embedding matrix must be 2-D, got shape {matrix.shape}")
        table = np.zeros((matrix.shape[0], matrix.shape[1] + 1), dtype=np.float32)
        table[:, :-1] = matrix
        return table

    def _split_chunks(self, store: UsGaapStore, n_pairs: int) -> Iterator[dict[str, np.ndarray]]:
        """This reader's chunks, filtered to the split and shuffled inside, as column arrays.

        Cells of held-out tickers are dropped from "train" and "val" (and are all of "heldout").
        """
        heldout_ids = None
        if self.heldout_tickers:
            heldout_ids = heldout_ticker_ids(store.get_tickers(), self.heldout_tickers)
        for start, stop in self.chunk_ranges(int(store.get_triplet_count())):
            cells = store.read_cell_range(start, stop)
            keep = split_mask(
                np.asarray(cells.cell_key),
                self.split,
                self.val_fraction,
                getattr(cells, "ticker_id", None),
                heldout_ids,
            )
            index = np.flatnonzero(keep)
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.epoch, start])
                index = rng.permutation(index)
            pair_id = np.asarray(cells.pair_id, dtype=np.int64)[index]
            if len(pair_id) and (pair_id.min() < 0 or pair_id.max() >= n_pairs):
                raise ValueError(
                    f"cells {start}..{stop} reference pair ids outside the embedding matrix "
                    f"(0..{n_pairs - 1}): rebuild the PCA embeddings before training"
                )
            yield {
                "pair_id": pair_id,
                "i_cell": np.asarray(cells.i_cell, dtype=np.int64)[index],
                "scaled": np.asarray(cells.scaled, dtype=np.float32)[index],
                "unscaled": np.asarray(cells.unscaled, dtype=np.float64)[index],
            }

    def _batches(
        self, table: np.ndarray, chunks: Iterator[dict[str, np.ndarray]]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Re-cut chunk columns into `batch_size` batches, carrying remainders across chunks."""
        pending: dict[str, np.ndarray] | None = None
        for chunk in chunks:
            if pending is not None:
                chunk = {k: np.concatenate([pending[k], chunk[k]]) for k in chunk}
            n_full = len(chunk["pair_id"]) // self.batch_size * self.batch_size
            yield from self._cut(table, chunk, n_full)
            pending = {k: v[n_full:] for k, v in chunk.items()}
        if pending is not None and len(pending["pair_id"]) and not self.drop_last:
            yield from self._cut(table, pending, len(pending["pair_id"]))

    def _cut(
        self, table: np.ndarray, chunk: dict[str, np.ndarray], stop: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of the first `stop` cells of `chunk`.

        The gather uses numpy (single-threaded): torch's intra-op thread pool made the same
        `index_select` up to 100x slower on a loaded 2-core machine.
        """
        columns = {k: torch.from_numpy(np.ascontiguousarray(v[:stop])) for k, v in chunk.items()}
        for i in range(0, stop, self.batch_size):
            rows = chunk["pair_id"][i : i + self.batch_size]
            x = np.empty((len(rows), table.shape[1]), dtype=np.float32)
            np.take(table, rows, axis=0, out=x)
            x[:, -1] = chunk["scaled"][i : i + self.batch_size]
            yield {
                "x": torch.from_numpy(x),
                "pair_id": columns["pair_id"][i : i + self.batch_size],
                "i_cell": columns["i_cell"][i : i + self.batch_size],
                "unscaled": columns["unscaled"][i : i + self.batch_size],
            }

    def _samples(
        self, store: UsGaapStore, table: np.ndarray, chunks: Iterator[dict[str, np.ndarray]]
    ) -> Iterator[dict[str, Any]]:
        """One dict per cell, with its fitted scaler and (concept, unit), for analysis."""
        scalers = store.load_scalers()
        pairs = list(store.get_embedding_matrix()[1])
        for chunk in chunks:
            for pair_id, i_cell, scaled, unscaled in zip(
                chunk["pair_id"].tolist(),
                chunk["i_cell"].tolist(),
                chunk["scaled"].tolist(),
                chunk["unscaled"].tolist(),
                strict=True,
            ):
                x = torch.from_numpy(table[pair_id].copy())
                x[-1] = scaled
                concept, unit = pairs[pair_id]
                yield {
                    "x": x,
                    "pair_id": pair_id,
                    "i_cell": i_cell,
                    "unscaled": unscaled,
                    "scaler": scalers[pair_id],
                    "concept": concept,
                    "unit": unit,
                }


def collate_with_scaler(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensor fields of per-sample dicts; keep scaler, concept and unit as lists."""
    if not samples:
        raise ValueError("collate_with_scaler got an empty list of samples")
    batch: dict[str, Any] = {
        "x": torch.stack([s["x"] for s in samples]),
        "pair_id": torch.tensor([s["pair_id"] for s in samples], dtype=torch.int64),
        "i_cell": torch.tensor([s["i_cell"] for s in samples], dtype=torch.int64),
        "unscaled": torch.tensor([s["unscaled"] for s in samples], dtype=torch.float64),
    }
    for key in LIST_KEYS:
        batch[key] = [s[key] for s in samples]
    return batch
