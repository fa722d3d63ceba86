"""Step 2 machinery: facts from the database -> chunked cell columns (the per-pair value
indexes of a full build are in pair_index_build.py).

Also numbers tickers (`TickerAssigner`, ids in order of first appearance, append-only).

Memory stays flat as the corpus grows: facts stream from the database a group of tickers at a
time and cells are written a chunk at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import numpy as np
import pandas as pd
import pyarrow as pa
from xxhash import xxh3_64_intdigest

from narrative_pipeline.db.protocol import FactSource
from narrative_pipeline.store.protocol import KeyValueStore
from narrative_pipeline.us_gaap import layout
from narrative_pipeline.us_gaap.chunk_table import ChunkTable

if TYPE_CHECKING:
    from narrative_pipeline.db.database import FactCodes

FACT_FRAME_ROWS = 262_144  # target rows per database read
MAX_TICKERS_PER_QUERY = 500  # keeps IN (...) lists well under SQL parameter limits
CHUNKS_PER_READ = 8


def iter_fact_frames(db: FactSource, target_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The database's facts in (ticker, accn, concept, unit) order, a few tickers per frame.

    The group size adapts to the facts per ticker seen so far so each frame holds about
    `target_rows` rows, whatever the source (a CSV ticker has ~1k facts, companyfacts ~25k).
    """
    yield from _iter_groups(db, db.facts_frame, target_rows)


def _iter_groups(db: FactSource, read: Any, target_rows: int | None) -> Iterator[Any]:
    """read(tickers=group) for groups of the sorted tickers, the next group read in a
    background thread while the caller works on the current one (the database driver
    releases the GIL while it steps; at most two groups are held)."""
    target_rows = target_rows or FACT_FRAME_ROWS
    tickers = sorted(db.tickers())
    if not tickers:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        batch = tickers[:1]
        pending: Future[Any] | None = pool.submit(read, tickers=batch)
        i = len(batch)
        while pending is not None:
            frame = pending.result()
            per_ticker = max(1.0, len(frame) / len(batch))
            group = int(min(MAX_TICKERS_PER_QUERY, max(1, target_rows // per_ticker)))
            pending = None
            if i < len(tickers):
                batch = tickers[i : i + group]
                pending = pool.submit(read, tickers=batch)
                i += len(batch)
            if len(frame):
                yield frame


GOLDEN_64 = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)


def _hash_texts(first: list, second: list) -> np.ndarray:
    """xxh3_64 of "first|second" per element (missing as ""): one hash per distinct part."""
    return np.fromiter(
        (
            xxh3_64_intdigest(f"{_text(a)}|{_text(b)}".encode())
            for a, b in zip(first, second, strict=True)
        ),
        dtype=np.uint64,
        count=len(first),
    )


def _text(value: Any) -> str:
    return "" if value is None or value != value else str(value)  # None / NaN -> ""


def combine_cell_keys(filing_hash: np.ndarray, pair_hash: np.ndarray) -> np.ndarray:
    """Per-cell key from the xxh3 of its "ticker|accn" and of its "concept|unit": the pair hash
    times the golden ratio, rotated, xor the filing hash, through splitmix64's finaliser
    (vectorised: no Python object per cell; keys of distinct cells are unrelated bits)."""
    x = np.asarray(pair_hash, dtype=np.uint64) * GOLDEN_64
    x = (x << np.uint64(31)) | (x >> np.uint64(33))
    x ^= np.asarray(filing_hash, dtype=np.uint64)
    x ^= x >> np.uint64(30)
    x *= MIX_1
    x ^= x >> np.uint64(27)
    x *= MIX_2
    x ^= x >> np.uint64(31)
    return x


def cell_key(ticker: str, accn: str, concept: str, unit: str) -> int:
    """The stable id of one cell (what `cell_keys` computes for every row)."""
    filing = _hash_texts([ticker], [accn])
    pair = _hash_texts([concept], [unit])
    return int(combine_cell_keys(filing, pair)[0])


def cell_keys(frame: pd.DataFrame) -> np.ndarray:
    """`cell_key` of every row: a cell id that survives rebuilds (hashes per distinct filing
    and per distinct pair, combined per row in numpy)."""
    filing_pos, filings = _factorize_two(frame["ticker"], frame["accn"])
    pair_pos, pairs = _factorize_two(frame["concept"], frame["unit"])
    filing_hash = _hash_texts(*filings)
    pair_hash = _hash_texts(*pairs)
    return combine_cell_keys(filing_hash[filing_pos], pair_hash[pair_pos])


def _factorize_two(first: pd.Series, second: pd.Series) -> tuple[np.ndarray, tuple[list, list]]:
    """Row positions into the distinct (first, second) pairs, and those pairs as two lists."""
    a_codes, a_names = pd.factorize(first, use_na_sentinel=False)
    b_codes, b_names = pd.factorize(second, use_na_sentinel=False)
    n_b = max(1, len(b_names))
    codes, combos = pd.factorize(a_codes.astype(np.int64) * n_b + b_codes)
    a_list, b_list = list(a_names), list(b_names)
    return codes, (
        [a_list[c // n_b] for c in combos.tolist()],
        [b_list[c % n_b] for c in combos.tolist()],
    )


class PairHashes:
    """The pair table's hashes, kept while successive FactCodes carry the same pair table
    (every group of one `iter_fact_codes` does): one hash per pair per build, not per group."""

    def __init__(self) -> None:
        self.concept: pa.Array | None = None
        self.unit: pa.Array | None = None
        self.hashes = np.zeros(0, dtype=np.uint64)

    def of(self, codes: FactCodes) -> np.ndarray:
        same = (self.concept is codes.pair_concept and self.unit is codes.pair_unit) or (
            self.concept is not None
            and self.unit is not None
            and self.concept.equals(codes.pair_concept)
            and self.unit.equals(codes.pair_unit)
        )
        if not same:
            self.concept, self.unit = codes.pair_concept, codes.pair_unit
            self.hashes = _hash_texts(codes.pair_concept.to_pylist(), codes.pair_unit.to_pylist())
        return self.hashes


def cell_keys_from_codes(codes: FactCodes, pair_hashes: PairHashes | None = None) -> np.ndarray:
    """`cell_keys` of DbUsGaap.fact_codes rows: one hash per filing and per pair of its
    (small) tables, combined per fact by position (`pair_hashes`: reused across groups)."""
    filing_hash = _hash_texts(codes.filing_ticker.to_pylist(), codes.filing_accn.to_pylist())
    pair_hash = (pair_hashes or PairHashes()).of(codes)
    return combine_cell_keys(filing_hash[codes.filing_pos], pair_hash[codes.pair_pos])


class PairAssigner:
    """Numbers (concept, unit) pairs 0, 1, ... in order of first appearance across frames,
    after the `known` pairs (an incremental update keeps every existing id)."""

    def __init__(self, known: list[tuple[str, str]] | None = None) -> None:
        self.pairs: list[tuple[str, str]] = [(c, u) for c, u in known or []]
        self.ids: dict[tuple[str, str], int] = {p: i for i, p in enumerate(self.pairs)}
        self._table: tuple[pa.Array, pa.Array] | None = None  # the FactCodes pair table ...
        self._by_pos = np.zeros(0, dtype=np.int64)  # ... and the id of each position (-1: none)

    def assign(self, concept: pd.Series, unit: pd.Series) -> np.ndarray:
        """Pair id of every row; Python work only per distinct pair in the frame."""
        c_codes, c_names = pd.factorize(concept, use_na_sentinel=False)
        u_codes, u_names = pd.factorize(unit, use_na_sentinel=False)
        n_units = max(1, len(u_names))
        codes, combos = pd.factorize(c_codes.astype(np.int64) * n_units + u_codes)
        pairs = [
            (str(c_names[combo // n_units]), str(u_names[combo % n_units]))
            for combo in combos.tolist()
        ]
        return self._ids_of(pairs)[codes]

    def assign_codes(self, codes: FactCodes) -> np.ndarray:
        """`assign` for DbUsGaap.fact_codes rows: pairs are factorized by their table
        position (one per (concept, unit)), so the ids are the same as `assign`'s. The ids of
        table positions are kept while successive FactCodes share one pair table (the groups
        of an `iter_fact_codes`): only positions not seen yet are looked up, in order of
        first appearance, as `assign` numbers them."""
        table = (codes.pair_concept, codes.pair_unit)
        if self._table is None or not (table[0] is self._table[0] and table[1] is self._table[1]):
            self._table = table
            self._by_pos = np.full(len(codes.pair_concept), -1, dtype=np.int64)
        pair_pos = np.asarray(codes.pair_pos)
        unseen = pair_pos[self._by_pos[pair_pos] < 0]
        if len(unseen):
            _, combos = pd.factorize(unseen)
            concepts = codes.pair_concept.take(pa.array(combos)).to_pylist()
            units = codes.pair_unit.take(pa.array(combos)).to_pylist()
            self._by_pos[combos] = self._ids_of(list(zip(concepts, units, strict=True)))
        return self._by_pos[pair_pos].astype(np.uint32)

    def _ids_of(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The id of each distinct pair, given in first-appearance order; new pairs are
        numbered next."""
        lookup = np.empty(len(pairs), dtype=np.uint32)
        for k, pair in enumerate(pairs):
            pair_id = self.ids.get(pair)
            if pair_id is None:
                pair_id = self.ids[pair] = len(self.pairs)
                self.pairs.append(pair)
            lookup[k] = pair_id
        return lookup


class TickerAssigner:
    """Numbers tickers in order of first appearance after the `known` ones (append-only)."""

    def __init__(self, known: list[str] | None = None) -> None:
        self.tickers: list[str] = list(known or [])
        self.ids: dict[str, int] = {t: i for i, t in enumerate(self.tickers)}

    def id_of(self, ticker: str) -> int:
        ticker_id = self.ids.get(ticker)
        if ticker_id is None:
            ticker_id = self.ids[ticker] = len(self.tickers)
            self.tickers.append(ticker)
        return ticker_id

    def assign(self, tickers: list[str], positions: np.ndarray) -> np.ndarray:
        """Ticker id of every row, given a small table of tickers and each row's position in it."""
        lookup = np.fromiter((self.id_of(str(t)) for t in tickers), np.uint32, len(tickers))
        return lookup[np.asarray(positions, dtype=np.int64)]


Item = TypeVar("Item")
Result = TypeVar("Result")


def iter_ahead(work: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """work(item) for each item, in order, the next one done in a thread while the caller
    uses this one (numpy releases the GIL: the two overlap on two cores). `items` is
    consumed by that thread; an error is raised where its result would be."""
    iterator = iter(items)

    def next_result() -> tuple[bool, Result | None]:
        for item in iterator:  # one item per call
            return True, work(item)
        return False, None

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next_result)
        while True:
            more, result = pending.result()
            if not more:
                return
            pending = pool.submit(next_result)
            yield cast("Result", result)


class BatchWriter(Protocol):
    """What writing cells and indexes needs of a store (a KeyValueStore, BackgroundWrites)."""

    def batch_write(self, items: list[tuple[bytes, bytes]], /) -> object: ...


class BackgroundWrites:
    """`store.batch_write` run on one thread, in call order (the same entries in the same
    order as direct calls: the same file), so the caller builds the next batch while one is
    written (the store's pwritev and CRC-32 release the GIL). At most `depth` batches wait;
    a write's error is raised by the next call or by `close`, which waits for all."""

    def __init__(self, store: BatchWriter, depth: int = 4) -> None:
        self.store = store
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[Future[object]] = deque()

    def batch_write(self, items: list[tuple[bytes, bytes]], /) -> object:
        self._pending.append(self._pool.submit(self.store.batch_write, items))
        while len(self._pending) > self.depth or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()
        return None

    def close(self) -> None:
        """Wait for every write; raises the first error (writes not started by then are
        cancelled)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class CellChunkWriter:
    """Buffers cell columns and writes them as full `CHUNK_CELLS` chunks (the last may be short).

    Chunks are numbered from `first_chunk` under `generation`; `rows` collects their chunk
    table rows (generation, chunk, size, smallest ticker id, largest ticker id).
    """

    COLUMNS = layout.STORED_COLUMNS

    def __init__(self, store: BatchWriter, generation: int, first_chunk: int = 0) -> None:
        self.store = store
        self.generation = generation
        self.buffers: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}
        self.buffered = 0
        self.next_chunk = first_chunk
        self.n_cells = 0
        self.rows: list[tuple[int, int, int, int, int]] = []

    def append(self, columns: dict[str, np.ndarray]) -> None:
        """Cells given as one array per stored column (all the same length)."""
        for name in self.COLUMNS:
            self.buffers[name].append(np.asarray(columns[name], dtype=layout.CELL_COLUMNS[name]))
        self.buffered += len(columns["pair_id"])
        while self.buffered >= layout.CHUNK_CELLS:
            self._write_chunk(layout.CHUNK_CELLS)

    def close(self) -> int:
        """Write the remainder; returns the number of cells written."""
        if self.buffered:
            self._write_chunk(self.buffered)
        return self.n_cells

    def _write_chunk(self, size: int) -> None:
        entries = []
        heads: dict[str, np.ndarray] = {}  # each column's first `size` values: this chunk
        for name in self.COLUMNS:
            joined = (
                np.concatenate(self.buffers[name])
                if len(self.buffers[name]) > 1
                else self.buffers[name][0]
            )
            heads[name] = joined[:size]
            entries.append(
                (
                    layout.cell_column_key(self.generation, name, self.next_chunk),
                    heads[name].tobytes(),
                )
            )
            self.buffers[name] = [joined[size:]] if len(joined) > size else []
        self.store.batch_write(entries)
        tickers = heads["ticker_id"]
        self.rows.append(
            (self.generation, self.next_chunk, size, int(tickers.min()), int(tickers.max()))
        )
        self.buffered -= size
        self.next_chunk += 1
        self.n_cells += size


def read_columns(
    store: KeyValueStore, refs: list[tuple[int, int]], columns: tuple[str, ...]
) -> list[dict[str, np.ndarray]]:
    """Decoded columns of several (generation, chunk) in one batch_read; raises if any is missing."""
    keys = [layout.cell_column_key(g, c, k) for g, k in refs for c in columns]
    payloads = store.batch_read(keys)
    out = []
    for i, (generation, chunk) in enumerate(refs):
        arrays = {}
        for j, column in enumerate(columns):
            payload = payloads[i * len(columns) + j]
            if payload is None:
                raise LookupError(
                    f"store is missing column {column!r} of chunk {chunk} (generation {generation}); "
                    "it was rebuilt or deleted meanwhile: re-run the pipeline steps"
                )
            arrays[column] = np.frombuffer(payload, dtype=layout.CELL_COLUMNS[column])
        out.append(arrays)
    return out


def iter_chunk_columns(
    store: KeyValueStore,
    table: ChunkTable,
    columns: tuple[str, ...],
    positions: list[int] | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(table position, columns) for every chunk (or those at `positions`), a few per read."""
    wanted = list(range(len(table))) if positions is None else list(positions)
    for first in range(0, len(wanted), CHUNKS_PER_READ):
        batch = wanted[first : first + CHUNKS_PER_READ]
        refs = [(int(table.generation[p]), int(table.chunk[p])) for p in batch]
        yield from zip(batch, read_columns(store, refs, columns), strict=True)
