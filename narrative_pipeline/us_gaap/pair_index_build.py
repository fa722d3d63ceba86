"""Step 2's per-pair value indexes (full build): each pair's values sorted ascending with their
locators, ties in i_cell order, written under the generation (`layout.encode_pair_index`).

The cells are collected as the build writes them (`PairIndexCells.add`, on a worker thread),
by bucket of pairs (pair id % n_buckets, n_buckets = cells / BUCKET_CELLS rounded up), so every
cell is handled a bounded number of times whatever the corpus size: one pass to bucket it, one
sort in its bucket. (Before, each bucket re-read every stored chunk: n_buckets passes over all
cells, quadratic in the corpus: ~47 passes at the whole SEC.) Buckets past SPILL_BUFFER_BYTES
in memory are appended to temporary files (Python's tempfile directory: `TMPDIR`, else /tmp;
~20 bytes per cell, ~0.9 GB for the whole SEC, removed when the step ends), so memory stays
flat: a bucket (~BUCKET_CELLS cells) is sorted at a time, SORT_THREADS of them read and sorted
in threads ahead of the writing (numpy's sorts release the GIL). Buckets and the pairs in each are
written in the same order, in the same batches, as the previous chunk-rereading build did:
same keys, payloads and store file bytes (benchmarks/bench_step2_ab.py compares the files).
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from math import ceil
from pathlib import Path

import numpy as np

from narrative_pipeline.us_gaap import layout
from narrative_pipeline.us_gaap.build import BatchWriter

BUCKET_CELLS = 1_000_000  # cells sorted at once while building the per-pair index (bounds memory)
SPILL_BUFFER_BYTES = 64 << 20  # bucketed cells held in memory before they go to temporary files
WRITE_BATCH_BYTES = 8 << 20  # bytes per batch_write of per-pair index entries
SMALL_PAIR_IDS = 1 << 16  # pair ids below this sort by radix (uint16 keys)
SORT_THREADS = 2  # buckets sorted at once ahead of the writing
ADD_AHEAD = 2  # batches of cells waiting to be bucketed
RANK_BITS = 21  # cells per bucket sorted by one integer key (pair 16 + rank 21 + position 21 bits)

COLUMNS: dict[str, np.dtype] = {
    "pair": np.dtype("<u4"),
    "value": np.dtype("<f8"),
    "cell": np.dtype("<u8"),
}
Cells = dict[str, np.ndarray]  # COLUMNS, aligned


class PairIndexCells:
    """The cells of a full build by bucket of pairs, in i_cell order within each bucket.

    `n_cells`: how many cells the build will write (the database's fact count: it sets the
    number of buckets; a wrong guess changes only the write order, never an index).
    Cells are kept by i_cell; their locators are made when the index is written
    (`cell_locators`).
    """

    def __init__(self, generation: int, n_cells: int) -> None:
        self.generation = generation
        self.n_buckets = max(1, ceil(n_cells / BUCKET_CELLS))
        self.next_cell = 0
        self._parts: list[list[Cells]] = [[] for _ in range(self.n_buckets)]
        self._buffered = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._spilled = [False] * self.n_buckets
        self._pool = ThreadPoolExecutor(max_workers=1)  # bucketing and spilling, in order
        self._pending: deque[Future[None]] = deque()

    def add(self, pair_id: np.ndarray, values: np.ndarray) -> None:
        """The next cells in i_cell order (the build's pair_id and unscaled columns, not
        changed afterwards): bucketed on a worker thread, at most ADD_AHEAD batches behind."""
        first = self.next_cell
        self.next_cell += len(pair_id)
        self._pending.append(self._pool.submit(self._bucket_cells, pair_id, values, first))
        while len(self._pending) > ADD_AHEAD or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()

    def _wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _bucket_cells(self, pair_id: np.ndarray, values: np.ndarray, first: int) -> None:
        n = len(pair_id)
        pair_id = np.asarray(pair_id, COLUMNS["pair"])
        values = np.asarray(values, COLUMNS["value"])
        if self.n_buckets == 1:
            cells = np.arange(first, first + n, dtype=np.uint64)
            self._parts[0].append({"pair": pair_id, "value": values, "cell": cells})
        else:
            bucket: np.ndarray = (pair_id % self.n_buckets).astype(_small_int(self.n_buckets))
            order = np.argsort(bucket, kind="stable")
            bounds = np.searchsorted(bucket[order], np.arange(self.n_buckets + 1)).tolist()
            columns = {
                "pair": pair_id[order],
                "value": values[order],
                "cell": order.astype(np.uint64) + np.uint64(first),
            }
            for b in range(self.n_buckets):
                if bounds[b + 1] > bounds[b]:
                    part = slice(bounds[b], bounds[b + 1])
                    self._parts[b].append({k: v[part] for k, v in columns.items()})
        self._buffered += n * CELL_BYTES
        if self._buffered >= SPILL_BUFFER_BYTES:
            self._spill()

    def _file(self, b: int, column: str) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / f"{b}.{column}"

    def _spill(self) -> None:
        """Append every bucket's buffered cells to its temporary files (one per column)."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="narrative-pair-index-")
        for b, parts in enumerate(self._parts):
            if not parts:
                continue
            for column in COLUMNS:
                with open(self._file(b, column), "ab") as file:
                    for part in parts:
                        file.write(part[column].data)
            self._spilled[b] = True
            self._parts[b] = []
        self._buffered = 0

    def bucket(self, b: int) -> Cells:
        """Bucket `b`'s cells in i_cell order (its files', then what is still in memory);
        after the last `add` (`write_indexes` waits for it)."""
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
        for column, dtype in COLUMNS.items():
            if self._spilled[b]:
                pieces[column].append(np.fromfile(self._file(b, column), dtype=dtype))
            pieces[column] += [part[column] for part in self._parts[b]]
        return {k: np.concatenate(v) if v else np.zeros(0, COLUMNS[k]) for k, v in pieces.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._parts = [[] for _ in range(self.n_buckets)]
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def write_indexes(self, store: BatchWriter) -> None:
        """Write every pair's index, bucket by bucket (the next buckets sorted in threads)."""
        try:
            self._wait()
            for cells in _sorted_ahead(self, range(self.n_buckets)):
                write_sorted_pair_indexes(store, self.generation, cells)
        finally:
            self.close()


CELL_BYTES = sum(dtype.itemsize for dtype in COLUMNS.values())


def _small_int(n: int) -> type:
    return np.uint16 if n <= SMALL_PAIR_IDS else np.uint32


def _sorted_ahead(cells: PairIndexCells, buckets: range) -> Iterator[Cells]:
    """Each bucket's cells sorted by (pair, value, i_cell), the next ones prepared in threads
    (SORT_THREADS buckets at a time: numpy's sorts and gathers release the GIL)."""

    def prepare(b: int) -> Cells:
        bucket = cells.bucket(b)
        order = sort_by_pair_then_value(bucket["pair"], bucket["value"])
        return {k: v[order] for k, v in bucket.items()}

    with ThreadPoolExecutor(max_workers=SORT_THREADS) as pool:
        pending = [pool.submit(prepare, b) for b in buckets[:SORT_THREADS]]
        for k in range(len(buckets)):
            if k + SORT_THREADS < len(buckets):
                pending.append(pool.submit(prepare, buckets[k + SORT_THREADS]))
            yield pending.pop(0).result()


def sort_by_pair_then_value(pair_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Stable order by (pair, value): ties keep their input (i_cell) order.

    Pair ids below 2**16 and up to 2**21 cells (a bucket's usual shape): one fast (SIMD,
    unstable) argsort of the values gives each cell its rank among the distinct values; then
    the integer keys (pair, rank, position), unique, are sorted as values (a SIMD sort, not an
    argsort) and the positions read back from their low bits: the stable order. Otherwise one
    stable sort by value, then one stable sort by pair.
    """
    n = len(values)
    pair_ids = np.asarray(pair_ids)
    if n and n <= 1 << RANK_BITS and int(pair_ids.max()) < SMALL_PAIR_IDS:
        by_value = np.argsort(values)
        ordered = values[by_value]
        rank = np.cumsum(np.r_[False, ordered[1:] != ordered[:-1]], dtype=np.uint64)
        key = pair_ids[by_value].astype(np.uint64) << np.uint64(2 * RANK_BITS)
        key |= rank << np.uint64(RANK_BITS)
        key |= by_value.astype(np.uint64)
        key.sort()
        return (key & np.uint64((1 << RANK_BITS) - 1)).astype(np.intp)
    order = np.argsort(values, kind="stable")
    return order[np.argsort(pair_ids[order], kind="stable")]


def cell_locators(generation: int, i_cell: np.ndarray) -> np.ndarray:
    """`layout.encode_locators` of cells given by i_cell in a full build (chunks of
    CHUNK_CELLS cells numbered from 0)."""
    i_cell = np.asarray(i_cell, dtype=np.uint64)
    size = layout.CHUNK_CELLS
    if size == 1 << layout.LOCATOR_OFFSET_BITS:  # always, but for tests' smaller chunks
        return layout.encode_locators(generation, 0, i_cell)
    chunk, offset = np.divmod(i_cell, np.uint64(size))
    return layout.encode_locators(
        generation, 0, (chunk << np.uint64(layout.LOCATOR_OFFSET_BITS)) | offset
    )


def write_sorted_pair_indexes(store: BatchWriter, generation: int, cells: Cells) -> None:
    """The index of every pair in `cells` (sorted by pair, then value), in pair order, in
    batches of about WRITE_BATCH_BYTES."""
    pair_ids, values = cells["pair"], cells["value"]
    locators = cell_locators(generation, cells["cell"])
    if not len(pair_ids):
        return
    starts = np.flatnonzero(np.r_[True, pair_ids[1:] != pair_ids[:-1]])
    ends = np.append(starts[1:], len(pair_ids))
    batch, batch_bytes = [], 0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        payload = layout.encode_pair_index(values[start:end], locators[start:end])
        batch.append((layout.pair_index_key(generation, int(pair_ids[start])), payload))
        batch_bytes += len(payload)
        if batch_bytes >= WRITE_BATCH_BYTES:
            store.batch_write(batch)
            batch, batch_bytes = [], 0
    if batch:
        store.batch_write(batch)
