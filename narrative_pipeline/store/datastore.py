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

Concurrency: one writer per file, enforced with flock(LOCK_EX) (StoreLockedError); readers
(`read_only=True`) take no lock and see the file as it was when they opened it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xxhash import xxh3_64_intdigest

from narrative_pipeline.store.crc import SMALL_CRC_MAX, crc32_fixed
from narrative_pipeline.store.errors import (
    CorruptStoreError,
    ReadOnlyStoreError,
    StoreError,
    StoreLockedError,
)
from narrative_pipeline.store.format import (
    ALIGNMENT,
    METADATA,
    METADATA_SIZE,
    TOMBSTONE_BYTE,
    TOMBSTONE_CRC,
    pad_for,
    validate_key,
    validate_payload,
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
_ZEROS = bytes(ALIGNMENT)
_META_DTYPE = np.dtype([("hash", "<u8"), ("prev", "<u8"), ("crc", "<u4")])  # packed, 20 bytes
_COMPACT_CHUNK = 1 << 16


@dataclass(frozen=True)
class CompactionResult:
    size_before: int
    size_after: int
    live_entries: int


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
    ) -> None:
        self._path = Path(path)
        self._fsync = fsync
        self._read_only = read_only
        self._lock = threading.RLock()
        self._fd = -1
        self._view: FileView | None = None
        self._verify_reads = True  # benchmarks/bench_store.py turns it off to measure its cost
        self._fd = _open_file(self._path, read_only)
        try:
            if not read_only:
                _lock_file(self._fd, self._path)
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
        keys, payloads = _validate_items(items)
        with self._lock:
            self._check_writable()
            if not keys:
                return self._tail
            hashes = hash_keys(keys)
            parts, metas = _encode_entries(hashes, payloads, None, self._tail)
            self._append(parts)
            _index_batch(self._index, hashes, metas)
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
            self._index.set(key_hash, DELETED)
            return self._tail

    def _append(self, parts: list[bytes | memoryview]) -> None:
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
            prev = view.u64(meta + 8)
            value = view.mm[prev + pad_for(prev) : meta]
            if self._verify_reads and zlib.crc32(value) != view.u32(meta + 16):
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
            values = [mm[s:e] for s, e in zip(starts.tolist(), metas.tolist(), strict=True)]
            if self._verify_reads:
                self._verify_batch(view, starts, metas, values)
        if all_found:
            return values
        out: list[bytes | None] = [None] * count
        for i, value in zip(hit_at.tolist(), values, strict=True):
            out[i] = value
        return out

    def _verify_batch(
        self, view: FileView, starts: np.ndarray, metas: np.ndarray, values: list[bytes]
    ) -> None:
        """Check the CRC-32 of every entry read; one table gather for small equal-size payloads."""
        if not values:
            return
        stored = view.u32_at(metas + 16)
        lengths = metas - starts
        length = int(lengths[0])
        if length <= SMALL_CRC_MAX and not (lengths != length).any():
            rows = view.buf[starts[:, None] + np.arange(length, dtype=np.int64)]
            checksums = crc32_fixed(rows)
        else:
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
            prev = view.u64(meta + 8)
            value = view.mm[prev + pad_for(prev) : meta]
            if self._verify_reads and zlib.crc32(value) != view.u32(meta + 16):
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
                _lock_file(tmp_fd, tmp_path)
                hashes, new_metas = self._copy_live_entries(tmp_fd)
                os.fsync(tmp_fd)
                os.replace(tmp_path, self._path)
                _fsync_dir(self._path.parent)
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
            log.info(
                "compacted %s: %d -> %d bytes, %d live entries",
                self._path,
                before,
                self._tail,
                len(hashes),
            )
            return CompactionResult(before, self._tail, len(hashes))

    def _copy_live_entries(self, out_fd: int) -> tuple[np.ndarray, np.ndarray]:
        hashes, metas = self._live_in_file_order()
        view = self._current_view()
        out_tail = 0
        new_metas: list[np.ndarray] = []
        for start in range(0, len(metas), _COMPACT_CHUNK):
            chunk_metas = metas[start : start + _COMPACT_CHUNK]
            chunk_hashes = hashes[start : start + _COMPACT_CHUNK]
            prevs = view.u64_at(chunk_metas + 8).astype(np.int64)
            starts = prevs + (-prevs & (ALIGNMENT - 1))
            stored = view.u32_at(chunk_metas + 16)
            payloads = [
                view.mm[s:e] for s, e in zip(starts.tolist(), chunk_metas.tolist(), strict=True)
            ]
            checksums = np.fromiter(map(zlib.crc32, payloads), np.uint32, len(payloads))
            if not np.array_equal(checksums, stored):
                bad = int(np.flatnonzero(checksums != stored)[0])
                raise CorruptStoreError(
                    f"{self._path}: entry with metadata at byte {int(chunk_metas[bad])} fails its "
                    "CRC-32; compaction aborted, original file unchanged"
                )
            parts, chunk_new = _encode_entries(chunk_hashes, payloads, checksums, out_tail)
            data = b"".join(parts)
            _write_all(out_fd, data, out_tail)
            out_tail += len(data)
            new_metas.append(chunk_new)
        metas_out = np.concatenate(new_metas) if new_metas else np.zeros(0, np.int64)
        return hashes, metas_out


# ---- helpers ------------------------------------------------------------------------------
def _open_file(path: Path, read_only: bool) -> int:
    """Open (creating for writers) with errors that say what is wrong with `path`."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a store file")
    if read_only:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(
                f"{path}: no such store file (read_only=True does not create one)"
            ) from None
        except PermissionError as exc:
            raise StoreError(f"{path}: permission denied: {exc}") from None
    if path.exists():
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise StoreError(f"{path} is not a regular file")
        if not mode & 0o222:
            # Root could open it anyway; respect the read-only mark rather than append to it.
            raise StoreError(
                f"{path} is read-only on disk (mode {stat.filemode(mode)}); "
                "open it with read_only=True, or make it writable first"
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError as exc:
        raise StoreError(
            f"{path}: cannot open for writing: {exc}; use read_only=True to read"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise StoreError(f"{path}: read-only file system; use read_only=True") from None
        raise
    if os.fstat(fd).st_size == 0:
        _fsync_dir(path.parent)  # a fresh file: make its directory entry durable too
    return fd


def _lock_file(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreLockedError(
            f"{path} is already open for writing by another process or DataStore "
            "(one writer at a time); open it with read_only=True to read alongside"
        ) from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _validate_items(items: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """Check every pair before anything is written, so a bad pair leaves the store unchanged."""
    if isinstance(items, dict | bytes | str):
        raise TypeError("batch_write: pass a list of (key, payload) tuples")
    pairs = items if isinstance(items, list) else list(items)
    try:
        keys = [key for key, _ in pairs]
        payloads = [payload for _, payload in pairs]
    except (TypeError, ValueError):
        bad = next(i for i, p in enumerate(pairs) if not isinstance(p, tuple | list) or len(p) != 2)
        raise TypeError(f"batch_write: item {bad} is not a (key, payload) pair") from None
    if set(map(type, keys)) - {bytes}:
        keys = [validate_key(k, f"batch_write item {i}") for i, k in enumerate(keys)]
    if set(map(type, payloads)) - {bytes}:
        payloads = [validate_payload(p, f"batch_write item {i}") for i, p in enumerate(payloads)]
    shortest = min(map(len, payloads), default=2)
    if shortest == 0 or (shortest == 1 and TOMBSTONE_BYTE in payloads):
        for i, p in enumerate(payloads):
            validate_payload(p, f"batch_write item {i}")
    return keys, payloads


def _encode_entries(
    hashes: np.ndarray, payloads: list[bytes], checksums: np.ndarray | None, tail: int
) -> tuple[list[bytes | memoryview], np.ndarray]:
    """Bytes for appending entries at `tail`, and each entry's metadata offset.

    `checksums=None` computes the CRC-32s here (vectorised for small equal-size payloads).
    """
    lengths = list(map(len, payloads))
    length = lengths[0]
    if len(payloads) > 1 and lengths.count(length) == len(lengths):
        return _encode_fixed_size(hashes, payloads, checksums, tail, length)
    if checksums is None:
        checksums = np.fromiter(map(zlib.crc32, payloads), np.uint32, len(payloads))
    out = bytearray()
    metas = []
    pos = tail
    pack = METADATA.pack
    for key_hash, payload, checksum in zip(
        hashes.tolist(), payloads, checksums.tolist(), strict=True
    ):
        pad = -pos & (ALIGNMENT - 1)
        if pad:
            out += _ZEROS[:pad]
        out += payload
        meta = pos + pad + len(payload)
        out += pack(key_hash, pos, checksum)
        metas.append(meta)
        pos = meta + METADATA_SIZE
    return [out], np.array(metas, np.int64)


def _encode_fixed_size(
    hashes: np.ndarray, payloads: list[bytes], checksums: np.ndarray | None, tail: int, length: int
) -> tuple[list[bytes | memoryview], np.ndarray]:
    """Vectorised encoding when all payloads have one size: every entry has the same stride."""
    count = len(payloads)
    stride = -(-(length + METADATA_SIZE) // ALIGNMENT) * ALIGNMENT
    lead = pad_for(tail)
    first_meta = tail + lead + length
    metas = first_meta + np.arange(count, dtype=np.int64) * stride
    records = np.zeros((count, stride), np.uint8)
    payload_bytes = np.frombuffer(b"".join(payloads), np.uint8).reshape(count, length)
    records[:, :length] = payload_bytes
    if checksums is None:
        if length <= SMALL_CRC_MAX:
            checksums = crc32_fixed(payload_bytes)
        else:
            checksums = np.fromiter(map(zlib.crc32, payloads), np.uint32, count)
    meta = np.empty(count, _META_DTYPE)
    meta["hash"] = hashes
    meta["prev"][0] = tail
    meta["prev"][1:] = metas[:-1] + METADATA_SIZE
    meta["crc"] = checksums
    records[:, length : length + METADATA_SIZE] = meta.view(np.uint8).reshape(count, METADATA_SIZE)
    body = memoryview(records.reshape(-1))[: (count - 1) * stride + length + METADATA_SIZE]
    parts: list[bytes | memoryview] = [_ZEROS[:lead], body] if lead else [body]
    return parts, metas


def _index_batch(index: HashIndex, hashes: np.ndarray, metas: np.ndarray) -> None:
    if len(hashes) == 1:
        index.set(int(hashes[0]), int(metas[0]))
        return
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    repeated = sorted_hashes[1:] == sorted_hashes[:-1]
    if repeated.any():  # a key written twice in one batch: its last entry wins
        last = np.ones(len(order), bool)
        last[:-1] = ~repeated
        keep = order[last]
        hashes, metas = hashes[keep], metas[keep]
    index.insert_many(hashes, metas)


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
