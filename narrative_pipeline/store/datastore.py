"""DataStore: the embedded simd-r-drive store, one append-only file, same API as the official client.

File format (simd-r-drive engine >= 0.15, byte for byte; see format.py): no header; each write
appends zero padding up to the next 64-byte boundary, the payload, and 20 bytes of metadata
`key_hash u64 | prev_offset u64 | crc32 u32` (little endian), where `key_hash = xxh3_64(key)`,
`prev_offset` is the file length before this entry and the CRC-32 (zlib's) covers the payload.
A delete appends a tombstone: one 0x00 byte (no padding) and metadata. The newest entry of a key
wins; the file is a linked list from its end back to byte 0 through `prev_offset`.

Reading: the file is memory-mapped; an in-memory hash index (index.py) maps key_hash to the
offset of the newest entry's metadata. Opening walks the chain once (vectorised, recovery.py)
and never reads payloads, except to check the CRC of the entries in the last MiB (failures
there are logged, not cut: damage followed by good entries is not a torn tail).

Recovery: if the file does not end in a valid entry whose chain reaches byte 0 (a crash cut the
last write short, or garbage was appended), the newest offset that does end such an entry -- and
whose CRC-32 matches -- becomes the end. A writer truncates the file there and logs a warning
with the byte counts; a read-only opener serves that prefix. Automatic truncation is limited to
`max_recover_bytes` (64 MiB by default) so that a damaged file is not silently cut down to
nothing; `narrative-pipeline store check --recover` lifts the limit. A file with no valid entry
at all is refused as "not a simd-r-drive store" and left untouched.

Durability: `fsync=True` makes every write/batch_write/delete call fdatasync before returning,
so an acknowledged batch survives a crash at any moment; a batch cut short by a crash loses only
its incomplete entries (its complete ones are recovered). The reference engine never fsyncs.

Bounded file (automatic compaction): the store counts its live bytes (entries that are the newest
of a live key, padding included) as it writes; when a write or delete leaves the file larger than
`compact_ratio` (1.5 by default) times its live bytes *and* at least `compact_min_dead` (1 MiB)
bytes are dead, the writer compacts at once (see `compact`: new file, fsync, atomic rename).
`compact_ratio=None` turns this off; `compact_if_needed()` runs the same test on demand (upper
layers call it after deleting a generation, since deletes alone rarely cross the threshold while
the file is still growing). Readers that opened the file before a compaction keep their map of
the old inode and see the state they opened; `reopen_if_replaced()` moves them to the new file.

Concurrency: one writer per file, enforced with flock(LOCK_EX) (StoreLockedError); readers
(`read_only=True`) take no lock and see the file as it was when they opened it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
from xxhash import xxh3_64_intdigest

from narrative_pipeline.store.compaction import CompactionResult, copy_live_entries, entry_bytes
from narrative_pipeline.store.entries import encode_entries, validate_items
from narrative_pipeline.store.errors import (
    CorruptStoreError,
    ReadOnlyStoreError,
    StoreError,
)
from narrative_pipeline.store.files import (
    fsync_dir,
    lock_file,
    open_file,
    remove_stale_compaction,
)
from narrative_pipeline.store.format import (
    ALIGNMENT,
    METADATA,
    METADATA_SIZE,
    TOMBSTONE_BYTE,
    TOMBSTONE_CRC,
    pad_for,
    validate_key,
)
from narrative_pipeline.store.hashing import hash_keys
from narrative_pipeline.store.index import DELETED, HashIndex
from narrative_pipeline.store.recovery import (
    Chain,
    FileView,
    find_chain,
    newest_per_key,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RECOVER_BYTES = 64 << 20
DEFAULT_COMPACT_RATIO = 1.5  # compact when the file exceeds this multiple of its live bytes ...
DEFAULT_COMPACT_MIN_DEAD = 1 << 20  # ... and holds at least this many dead bytes
_PREV_AND_CRC = struct.Struct("<QI")  # the last 12 bytes of an entry's metadata
_AGGREGATE_CRC_MAX = 4096  # batch reads of equal payloads up to this size: one aggregate CRC check


class DataStore:
    """Append-only key/value store in one simd-r-drive compatible file.

    Methods mirror the official `simd_r_drive` Python client: `write`, `batch_write`, `read`,
    `batch_read`, `batch_read_structured`, `exists`, `in`, `delete`, `len`, `is_empty`,
    `file_size`; plus `compact`, `close` and use as a context manager. Writes return the new
    tail offset (what the server protocol answers); the official client returns None.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        read_only: bool = False,
        max_recover_bytes: int | None = DEFAULT_MAX_RECOVER_BYTES,
        compact_ratio: float | None = DEFAULT_COMPACT_RATIO,
        compact_min_dead: int = DEFAULT_COMPACT_MIN_DEAD,
    ) -> None:
        if compact_ratio is not None and compact_ratio <= 1.0:
            raise ValueError(f"compact_ratio must be > 1 (or None for never), got {compact_ratio}")
        self._path = Path(path)
        self._compact_ratio = compact_ratio
        self._compact_min_dead = compact_min_dead
        self._fsync = fsync
        self._read_only = read_only
        self._lock = threading.RLock()
        self._fd = -1
        self._view: FileView | None = None
        self._verify_reads = True  # benchmarks/bench_store.py turns it off to measure its cost
        self._fd = open_file(self._path, read_only)
        try:
            if not read_only:
                lock_file(self._fd, self._path)
                remove_stale_compaction(self._path)
            self._load(max_recover_bytes)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    # ---- opening ------------------------------------------------------------------------
    def _load(self, max_recover_bytes: int | None) -> None:
        size = os.fstat(self._fd).st_size
        view = FileView(self._fd, size)
        chain = find_chain(view, scan_limit=max_recover_bytes)
        if chain is None:
            view.close()
            limited = max_recover_bytes is not None and size > max_recover_bytes
            hint = (
                f"only the last {max_recover_bytes} bytes were searched; "
                f"`narrative-pipeline store check --recover {self._path}` searches all of it"
                if limited
                else "a store whose only write was cut short holds no complete entry and can be deleted"
            )
            raise CorruptStoreError(
                f"{self._path}: not a simd-r-drive store: no valid entry chain found in its "
                f"{size} bytes; the file was left untouched ({hint})"
            )
        self._apply_recovery(chain, size, max_recover_bytes)
        self._tail = chain.end
        self._index = _build_index(view, chain)
        self._live_bytes: int | None = (
            None  # counted on first need (writers with auto-compaction: now)
        )
        if not self._read_only and self._compact_ratio is not None:
            self._live_bytes = entry_bytes(view, self._index.live_items()[1])
        if self._tail != size:
            view.close()
            view = FileView(self._fd, self._tail)
        self._view = view

    def _apply_recovery(self, chain: Chain, size: int, max_recover_bytes: int | None) -> None:
        if not chain.dropped_bytes:
            for note in chain.notes:
                log.warning("%s: %s", self._path, note)
            return
        what = (
            f"{self._path}: the last {chain.dropped_bytes} of {size} bytes are not complete "
            f"entries (torn write or trailing garbage); valid data ends at byte {chain.end}"
        )
        for note in chain.notes:
            what += f"; {note}"
        if self._read_only:
            log.warning("%s; read-only: serving the valid prefix, file not modified", what)
            return
        if max_recover_bytes is not None and chain.dropped_bytes > max_recover_bytes:
            raise CorruptStoreError(
                f"{what}; refusing to cut more than {max_recover_bytes} bytes automatically. "
                f"Run `narrative-pipeline store check --recover {self._path}` to accept."
            )
        os.ftruncate(self._fd, chain.end)
        os.fsync(self._fd)
        log.warning("%s; truncated %d bytes", what, chain.dropped_bytes)

    # ---- context manager / lifecycle ----------------------------------------------------
    def __enter__(self) -> DataStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Unmap, release the writer lock and close the file. Idempotent."""
        with self._lock:
            if self._view is not None:
                self._view.close()
                self._view = None
            if self._fd >= 0:
                os.close(self._fd)  # also releases the flock
                self._fd = -1

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return self._fd < 0

    # ---- writes -------------------------------------------------------------------------
    def write(self, key: bytes, payload: bytes) -> int:
        """Append `payload` under `key` (overwrites). Returns the new tail offset."""
        return self.batch_write([(key, payload)])

    def batch_write(self, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Append all pairs with one write syscall (one fsync when enabled); later pairs win."""
        keys, payloads = validate_items(items)
        with self._lock:
            self._check_writable()
            if not keys:
                return self._tail
            hashes = hash_keys(keys)
            before = self._tail
            parts, metas = encode_entries(hashes, payloads, None, before)
            self._append(parts)
            kept, replaced = _index_batch(self._index, hashes, metas)
            if self._live_bytes is not None:
                spans = (
                    metas + METADATA_SIZE - np.concatenate(([before], metas[:-1] + METADATA_SIZE))
                )
                self._live_bytes += int(spans[kept].sum()) - self._spans_of(replaced)
                self._compact_if_due()
            return self._tail

    def delete(self, key: bytes) -> int:
        """Append a tombstone for `key` if it is live; deleting a missing key does nothing."""
        key = validate_key(key, "delete")
        key_hash = xxh3_64_intdigest(key)
        with self._lock:
            self._check_writable()
            if self._index.get(key_hash) <= 0:
                return self._tail
            tail = self._tail
            self._append([TOMBSTONE_BYTE + METADATA.pack(key_hash, tail, TOMBSTONE_CRC)])
            replaced = self._index.set(key_hash, DELETED)
            if self._live_bytes is not None:
                self._live_bytes -= self._spans_of(np.array([replaced], np.int64))
                self._compact_if_due()
            return self._tail

    # ---- bounded file -------------------------------------------------------------------
    def _spans_of(self, metas: np.ndarray) -> int:
        """Bytes of the entries (padding and metadata included) whose metadata starts at `metas`."""
        metas = metas[metas > 0]
        if not len(metas):
            return 0
        view = self._view
        if view is None or view.size < int(metas.max()) + METADATA_SIZE:
            view = self._current_view()
        return entry_bytes(view, metas)

    @property
    def live_bytes(self) -> int:
        """Bytes of the newest entry of every live key: what compaction would leave."""
        with self._lock:
            if self._live_bytes is None:
                self._live_bytes = entry_bytes(self._current_view(), self._index.live_items()[1])
            return self._live_bytes

    def dead_bytes(self) -> int:
        """Bytes compaction would give back (overwritten and deleted entries, tombstones)."""
        return self._tail - self.live_bytes

    def compaction_due(self, ratio: float | None = None, min_dead: int | None = None) -> bool:
        """Whether the file exceeds `ratio` x its live bytes with at least `min_dead` dead bytes."""
        ratio = self._compact_ratio if ratio is None else ratio
        min_dead = self._compact_min_dead if min_dead is None else min_dead
        if ratio is None:
            return False
        return self.dead_bytes() >= min_dead and self._tail > ratio * self.live_bytes

    def compact_if_needed(
        self, ratio: float | None = DEFAULT_COMPACT_RATIO, min_dead: int | None = None
    ) -> CompactionResult | None:
        """Compact when `compaction_due(ratio, min_dead)`; returns what it did, or None."""
        with self._lock:
            self._check_writable()
            if not self.compaction_due(ratio, min_dead):
                return None
            return self.compact()

    def _compact_if_due(self) -> None:
        if self._compact_ratio is not None and self.compaction_due():
            self.compact()

    def reopen_if_replaced(self) -> bool:
        """Read-only openers: switch to the file now at `path` if a compaction replaced it."""
        with self._lock:
            self._check_open()
            try:
                current = os.stat(self._path)
            except FileNotFoundError:
                return False
            mine = os.fstat(self._fd)
            if (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                return False
            fresh = DataStore(self._path, read_only=True)
            old_fd, old_view = self._fd, self._view
            self._fd, self._view, fresh._fd, fresh._view = fresh._fd, fresh._view, -1, None
            self._tail, self._index, self._live_bytes = fresh._tail, fresh._index, fresh._live_bytes
            if old_view is not None:
                old_view.close()
            os.close(old_fd)
            return True

    def _append(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """Write `parts` at the tail; on any failure cut the file back so it stays valid."""
        start = self._tail
        total = sum(len(p) for p in parts)
        try:
            written = os.pwritev(self._fd, parts, start)
            if written < total:  # short write: finish it from a joined copy
                rest = b"".join(bytes(p) for p in parts)[written:]
                while rest:
                    n = os.pwrite(self._fd, rest, start + written)
                    written += n
                    rest = rest[n:]
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise StoreError(
                f"{self._path}: write of {total} bytes failed, nothing kept: {exc}"
            ) from exc
        self._tail = start + total

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise ReadOnlyStoreError(f"{self._path}: opened read-only; writes are not allowed")

    def _check_open(self) -> None:
        if self._fd < 0:
            raise StoreError(f"{self._path}: store is closed")

    # ---- reads --------------------------------------------------------------------------
    def _current_view(self) -> FileView:
        """The memory map, re-made when writes have grown the file past it (call with the lock).

        The old map is not closed here: bytes already sliced from it are copies, and numpy
        views keep it alive until they go, so dropping the reference is enough.
        """
        view = self._view
        if view is None:
            raise StoreError(f"{self._path}: store is closed")
        if view.size != self._tail:
            view = self._view = FileView(self._fd, self._tail)
        return view

    def read(self, key: bytes) -> bytes | None:
        """The newest payload for `key`, or None when missing or deleted."""
        key = validate_key(key, "read")
        key_hash = xxh3_64_intdigest(key)
        with self._lock:  # index and map must come from the same file (compaction swaps both)
            meta = self._index.get(key_hash)
            if meta <= 0:
                return None
            view = self._current_view()
            prev, checksum = _PREV_AND_CRC.unpack_from(view.mm, meta + 8)
            value = view.mm[prev + (-prev & 63) : meta]  # 64 = ALIGNMENT, inlined: hot path
            if self._verify_reads and zlib.crc32(value) != checksum:
                raise self._corrupt_entry(meta, "read")
            return value

    def batch_read(self, keys: list[bytes]) -> list[bytes | None]:
        """Payloads for `keys` in order (None where missing), vectorised over the batch."""
        if isinstance(keys, bytes | str):
            raise TypeError("batch_read: pass a list of keys, not a single key")
        keys = keys if isinstance(keys, list) else list(keys)
        count = len(keys)
        if not count:
            return []
        try:
            hashes = hash_keys(keys)  # also checks that every key is bytes-like
        except TypeError as exc:
            raise TypeError(f"batch_read {exc}") from None
        with self._lock:
            metas = self._index.lookup(hashes)
            view = self._current_view()
            found = metas > 0
            all_found = bool(found.all())
            if not all_found:
                hit_at = np.flatnonzero(found)
                metas = metas[hit_at]
            prevs = view.u64_at(metas + 8).astype(np.int64)
            starts = prevs + (-prevs & (ALIGNMENT - 1))
            mm = view.mm
            values: list[bytes | None] = [
                mm[s:e] for s, e in zip(starts.tolist(), metas.tolist(), strict=True)
            ]
            if self._verify_reads:
                self._verify_batch(view, starts, metas, cast("list[bytes]", values))  # all hits
        if all_found:
            return values
        out: list[bytes | None] = [None] * count
        for i, value in zip(hit_at.tolist(), values, strict=True):
            out[i] = value
        return out

    def _verify_batch(
        self, view: FileView, starts: np.ndarray, metas: np.ndarray, values: list[bytes]
    ) -> None:
        """Check the CRC-32s of a batch read; raise naming the first damaged entry.

        CRC-32 is affine over GF(2) (crc.py), so for payloads of one length the XOR of their CRCs
        equals the CRC of their XOR (corrected by the CRC of zeros when the count is even): one
        numpy XOR-reduce and one zlib call check the whole batch. Any single damaged entry
        changes the aggregate (CRC-32 catches every error pattern of up to 3 bits, and any burst
        up to 32 bits); several damaged entries escape only if their changes cancel exactly
        (chance 2**-32). When the aggregate disagrees, every entry is checked to name the culprit.
        """
        if not values:
            return
        lengths = metas - starts
        length = int(lengths[0])
        if length <= _AGGREGATE_CRC_MAX and not (lengths != length).any():
            if length % 8 == 0:  # starts are 64-aligned: payloads and CRCs are whole words
                first_word = starts >> 3
                if length > 8:
                    first_word = first_word[:, None] + np.arange(length >> 3)
                words = view._word_view("<u8", 0)[first_word]
                folded = np.bitwise_xor.reduce(words, axis=0).tobytes()
                stored = view._word_view("<u4", 0)[(metas + 16) >> 2]
            else:
                rows = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), length)
                folded = np.bitwise_xor.reduce(rows, axis=0).tobytes()
                stored = view.u32_at(metas + 16)
            if _aggregate_crc(folded, len(values)) == int(np.bitwise_xor.reduce(stored)):
                return
        stored = view.u32_at(metas + 16)
        checksums = np.fromiter(map(zlib.crc32, values), np.uint32, len(values))
        bad = checksums != stored
        if bad.any():
            raise self._corrupt_entry(int(metas[int(np.flatnonzero(bad)[0])]), "batch_read")

    def _corrupt_entry(self, meta: int, operation: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"{self._path}: {operation}: the entry whose metadata starts at byte {meta} fails its "
            "CRC-32 (the file is damaged); no bytes were returned. "
            f"`narrative-pipeline store check {self._path}` lists every damaged entry"
        )

    def batch_read_structured(
        self, data: dict[Any, bytes] | list[dict[Any, bytes]]
    ) -> dict[Any, bytes | None] | list[dict[Any, bytes | None]]:
        """Read a dict (or list of dicts) of keys in one batch; same shape back, values replaced."""
        single = isinstance(data, dict)
        dicts = [data] if single else data
        flat: list[bytes] = []
        for d in dicts:
            if not isinstance(d, dict):
                raise TypeError("batch_read_structured: all items in the list must be dictionaries")
            flat.extend(d.values())
        values = iter(self.batch_read(flat))
        rebuilt = [{name: next(values) for name in d} for d in dicts]
        return rebuilt[0] if single else rebuilt

    def exists(self, key: bytes) -> bool:
        """Whether `key` has a live (not deleted) entry."""
        key = validate_key(key, "exists")
        return self._index.get(xxh3_64_intdigest(key)) > 0

    def __contains__(self, key: object) -> bool:
        return self.exists(key)  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Number of live keys."""
        return self._index.live_count

    def is_empty(self) -> bool:
        return self._index.live_count == 0

    def file_size(self) -> int:
        """Bytes in the file (dead entries included): the valid tail offset."""
        return self._tail

    def live_key_hashes(self) -> np.ndarray:
        """xxh3_64 hashes of all live keys (keys themselves are not stored by the format)."""
        return self._index.live_items()[0]

    def iter_live_entries(self) -> Iterator[tuple[int, bytes]]:
        """(key_hash, payload) of every live key, in file order (a snapshot taken at the call)."""
        with self._lock:
            hashes, metas = self._live_in_file_order()
            view = self._current_view()
        for key_hash, meta in zip(hashes.tolist(), metas.tolist(), strict=True):
            prev, checksum = _PREV_AND_CRC.unpack_from(view.mm, meta + 8)
            value = view.mm[prev + pad_for(prev) : meta]
            if self._verify_reads and zlib.crc32(value) != checksum:
                raise self._corrupt_entry(meta, "iter_live_entries")
            yield key_hash, value

    def _live_in_file_order(self) -> tuple[np.ndarray, np.ndarray]:
        hashes, metas = self._index.live_items()
        order = np.argsort(metas)
        return hashes[order], metas[order]

    # ---- compaction ---------------------------------------------------------------------
    def compact(self) -> CompactionResult:
        """Rewrite the file with only the newest live entry of each key, then swap it in.

        The new file is written next to the old one, fsynced and renamed over it, so a crash at
        any point leaves either the old or the new file complete. CRCs are re-checked on copy.
        """
        with self._lock:
            self._check_writable()
            before = self._tail
            tmp_path = self._path.with_name(self._path.name + ".compact-tmp")
            tmp_fd = os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                lock_file(tmp_fd, tmp_path)
                hashes, metas = self._live_in_file_order()
                new_metas = copy_live_entries(
                    self._current_view(), hashes, metas, tmp_fd, self._path
                )
                os.fsync(tmp_fd)
                os.replace(tmp_path, self._path)
                fsync_dir(self._path.parent)
            except BaseException:
                os.close(tmp_fd)
                tmp_path.unlink(missing_ok=True)
                raise
            old_fd, self._fd = self._fd, tmp_fd
            os.close(old_fd)  # releases the old inode's lock; live iterators keep their map
            self._tail = os.fstat(tmp_fd).st_size
            self._view = FileView(self._fd, self._tail)
            order = newest_per_key(hashes)  # hashes are unique; this only sorts them
            self._index = HashIndex.from_sorted(hashes[order], new_metas[order])
            self._live_bytes = self._tail
            log.info(
                "compacted %s: %d -> %d bytes, %d live entries",
                self._path,
                before,
                self._tail,
                len(hashes),
            )
            return CompactionResult(before, self._tail, len(hashes))


# ---- helpers ------------------------------------------------------------------------------
def _index_batch(
    index: HashIndex, hashes: np.ndarray, metas: np.ndarray
) -> tuple[np.ndarray | slice, np.ndarray]:
    """Index a written batch; returns which of its entries are live and the metas they replaced."""
    if len(hashes) == 1:
        return slice(None), np.array([index.set(int(hashes[0]), int(metas[0]))], np.int64)
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    repeated = sorted_hashes[1:] == sorted_hashes[:-1]
    keep: np.ndarray | slice = slice(None)
    if repeated.any():  # a key written twice in one batch: its last entry wins
        last = np.ones(len(order), bool)
        last[:-1] = ~repeated
        keep = order[last]
        hashes, metas = hashes[keep], metas[keep]
    return keep, index.insert_many(hashes, metas)


def _aggregate_crc(folded: bytes, count: int) -> int:
    """XOR of the CRC-32s of `count` equal-length payloads whose XOR is `folded` (see above)."""
    even_correction = zlib.crc32(bytes(len(folded))) if count % 2 == 0 else 0
    return zlib.crc32(folded) ^ even_correction


def _build_index(view: FileView, chain: Chain) -> HashIndex:
    """Index the newest live entry of each key from a chain (newest first) without payloads."""
    metas = chain.metas()
    hashes = chain.hashes(view)
    tomb = chain.tombstones(view, metas)
    newest = newest_per_key(hashes)
    live = newest[~tomb[newest]] if tomb.any() else newest
    del newest, tomb
    live_hashes = hashes[live]
    del hashes  # keep the peak low: 10M entries are 80 MB per array
    live_metas = metas[live]
    del metas, live
    return HashIndex.from_sorted(live_hashes, live_metas)
