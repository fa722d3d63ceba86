"""Finding the valid entry chain of a store file: the vectorised backward walk and tail recovery.

Open walks `prev_offset` links from the file's end back to byte 0. That walk is sequential by
nature, so we speculate: after a link of length `d`, we guess that the next thousands of links
also have length `d` (true for batches of equal-sized payloads), read all their `prev_offset`
fields with one strided numpy view, and accept the longest prefix whose links check out exactly.
Every accepted link is verified, so speculation only changes speed, never the result. Files with
mixed sizes fall back to a scalar loop.

Recovery, when the tail is not a valid chain end: scan candidate end offsets backwards byte by
byte (vectorised pre-filter), and accept the newest candidate whose entry is well formed, whose
CRC-32 matches its payload, and whose chain reaches byte 0. Checking the CRC matters: payload
bytes (small integers, say) can look like metadata whose `prev_offset` points at a real entry end
or at 0, which would pass the reference engine's chain-only check and drop intact entries.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import zlib
from dataclasses import dataclass, field

import numpy as np

from narrative_pipeline.store.crc import SMALL_CRC_MAX, crc32_fixed
from narrative_pipeline.store.format import (
    ALIGNMENT,
    METADATA,
    METADATA_SIZE,
    MIN_ENTRY_END,
    TOMBSTONE_CRC,
    U32,
    U64,
    pad_for,
)

# Entries whose end lies in this many bytes before the tail get their CRC checked at open (cheap),
# so damage near the end is reported at once; `store check` verifies every entry.
TAIL_VERIFY_BYTES = 1 << 20
_SHORT_WALK_LINKS = 8
_CRC_CHUNK = 1 << 16
_BYTE_OFFSETS = np.arange(8, dtype=np.int64)


class FileView:
    """Read-only memory map of the first `size` bytes of a file, with vectorised readers."""

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        if size:
            self.mm: mmap.mmap | bytes = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            self.buf = np.frombuffer(self.mm, np.uint8)
        else:
            self.mm = b""
            self.buf = np.zeros(0, np.uint8)
        self._u64_views: dict[tuple[str, int], np.ndarray] = {}

    def close(self) -> None:
        """Unmap when nobody else holds a view; otherwise the map dies with its last user."""
        mm = self.mm
        self.buf = np.zeros(0, np.uint8)
        self._u64_views = {}
        self.mm = b""
        if isinstance(mm, mmap.mmap):
            with contextlib.suppress(BufferError):
                mm.close()

    def u64(self, pos: int) -> int:
        return U64.unpack_from(self.mm, pos)[0]

    def u32(self, pos: int) -> int:
        return U32.unpack_from(self.mm, pos)[0]

    def _word_view(self, dtype: str, residue: int) -> np.ndarray:
        """The whole map as `dtype` words starting at byte `residue` (cached)."""
        key = (dtype, residue)
        view = self._u64_views.get(key)
        if view is None:
            width = np.dtype(dtype).itemsize
            view = np.frombuffer(
                self.mm, dtype, count=(self.size - residue) // width, offset=residue
            )
            self._u64_views[key] = view
        return view

    def _words_at(self, positions: np.ndarray, dtype: str) -> np.ndarray:
        """Little-endian words at arbitrary (unaligned) positions.

        Small batches gather bytes; large ones index word views, one per alignment residue, so
        no (n, 8) index array is ever built (that would be 64 bytes per position).
        """
        width = np.dtype(dtype).itemsize
        positions = positions.astype(np.int64, copy=False)
        first_residue = int(positions[0]) % width
        if not ((positions - first_residue) % width).any():
            # One alignment for all (e.g. equal-size payloads): a single word gather.
            view = self._word_view(dtype, first_residue)
            return view[(positions - first_residue) // width]
        if len(positions) <= 4096:
            raw = self.buf[positions[:, None] + _BYTE_OFFSETS[:width]]
            return raw.view(dtype).reshape(-1)
        residues = positions % width
        out = np.empty(len(positions), dtype)
        for residue in np.unique(residues).tolist():
            mask = residues == residue
            out[mask] = self._word_view(dtype, residue)[(positions[mask] - residue) // width]
        return out

    def u64_at(self, positions: np.ndarray) -> np.ndarray:
        """Little-endian u64 at each (arbitrary, unaligned) position."""
        if not len(positions):
            return np.zeros(0, np.uint64)
        return self._words_at(positions, "<u8")

    def u32_at(self, positions: np.ndarray) -> np.ndarray:
        if not len(positions):
            return np.zeros(0, np.uint32)
        return self._words_at(positions, "<u4")

    def u64_range(self, start: int, count: int) -> np.ndarray:
        """u64 at start, start + 1, ..., start + count - 1: eight contiguous word-view slices."""
        out = np.empty(count, np.uint64)
        for shift in range(min(8, count)):
            first = start + shift
            residue = first % 8
            words = self._word_view("<u8", residue)
            begin = (first - residue) // 8
            out[shift::8] = words[begin : begin + len(out[shift::8])]
        return out

    def u64_descending(self, start: int, step: int, count: int) -> np.ndarray:
        """u64 at start, start - step, ..., count of them (a strided view when step % 8 == 0)."""
        if step % 8:
            return self.u64_at(start - np.arange(count, dtype=np.int64) * step).astype(np.int64)
        residue = start % 8
        view = self._word_view("<u8", residue)
        first = (start - residue) // 8
        stride = step // 8
        lowest = first - (count - 1) * stride
        return view[lowest : first + 1 : stride][::-1].astype(np.int64)


Run = tuple[int, int, int]  # (first_end, step, count): entries end at first_end - j * step


@dataclass
class Chain:
    """A valid chain as runs of equally spaced entries, newest first.

    Equal-size batches make long runs, so a 10M-entry file is a handful of (end, step, count)
    triples; per-entry arrays are made only as needed, each with one numpy pass.
    """

    runs: list[Run]
    dropped_bytes: int = 0  # bytes after the chain's end that recovery cut off
    notes: list[str] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.runs[0][0] if self.runs else 0

    def __len__(self) -> int:
        return sum(count for _, _, count in self.runs)

    def _ramps(self, shift: int, steps: bool = False) -> np.ndarray:
        """Concatenated `end - shift - j * step` (or the step itself) over all runs."""
        if steps:
            return np.repeat(
                np.array([s for _, s, _ in self.runs], np.int64),
                np.array([c for _, _, c in self.runs], np.int64),
            )
        parts = [
            np.arange(e - shift, e - shift - c * s, -s, dtype=np.int64) for e, s, c in self.runs
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def tails(self) -> np.ndarray:
        """Where each entry ends (its metadata end), newest first."""
        return self._ramps(0)

    def metas(self) -> np.ndarray:
        """Offset of each entry's metadata, newest first."""
        return self._ramps(METADATA_SIZE)

    def hashes(self, view: FileView) -> np.ndarray:
        """Each entry's key hash, read with one strided slice per run where possible."""
        parts = []
        for end, step, count in self.runs:
            first = end - METADATA_SIZE
            if step % 8 == 0 and count > 1:
                parts.append(view.u64_descending(first, step, count).astype(np.uint64))
            else:
                parts.append(
                    view.u64_at(np.arange(first, first - count * step, -step, dtype=np.int64))
                )
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    def entries(self, view: FileView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(meta_offsets, prev_offsets, is_tombstone), newest first."""
        metas = self.metas()
        prevs = metas + METADATA_SIZE - self._ramps(0, steps=True)
        return metas, prevs, self.tombstones(view, metas, prevs)

    def tombstones(
        self, view: FileView, metas: np.ndarray, prevs: np.ndarray | None = None
    ) -> np.ndarray:
        """Which entries are tombstones: only a 21-byte link can be one, then its byte says."""
        tomb = np.zeros(len(metas), bool)
        if not any(step == METADATA_SIZE + 1 for _, step, _ in self.runs):
            return tomb
        if prevs is None:
            prevs = metas + METADATA_SIZE - self._ramps(0, steps=True)
        maybe = np.flatnonzero(metas - prevs == 1)
        tomb[maybe] = view.buf[prevs[maybe]] == 0
        return tomb

    def recent_tails(self, within: int) -> list[int]:
        """Ends of the entries that end within `within` bytes of the chain's end."""
        out: list[int] = []
        limit = self.end - within
        for end, step, count in self.runs:
            if end <= limit:
                break
            take = min(count, (end - limit - 1) // step + 1)
            out += range(end, end - take * step, -step)
        return out


@dataclass
class WalkResult:
    runs: list[Run] | None  # None when the chain is broken
    broken_at: int = 0  # end offset of the entry whose link or shape was invalid


def _link_ok(prev: int, tail: int) -> bool:
    # prev must leave room for a non-empty payload before the metadata, and be a possible entry end.
    return prev == 0 or MIN_ENTRY_END <= prev <= tail - METADATA_SIZE - 1


def _add_run(runs: list[Run], end: int, step: int, count: int) -> None:
    """Append a run, merging it into the previous one when it simply continues it."""
    if runs:
        last_end, last_step, last_count = runs[-1]
        if last_step == step and last_end - last_count * step == end:
            runs[-1] = (last_end, step, last_count + count)
            return
    runs.append((end, step, count))


def walk_chain(view: FileView, tail: int) -> WalkResult:
    """Follow prev links from `tail` to 0, vectorised where link lengths repeat."""
    runs: list[Run] = []
    chunk, scalar_budget = 16, 0
    current = tail
    while current != 0:
        if current < MIN_ENTRY_END or current > view.size:
            return WalkResult(None, current)
        prev = view.u64(current - 12)
        if not _link_ok(prev, current):
            return WalkResult(None, current)
        step = current - prev
        count = min(chunk, (current - MIN_ENTRY_END) // step + 1)
        if scalar_budget > 0 or prev == 0 or count < 2:
            _add_run(runs, current, step, 1)
            current = prev
            scalar_budget -= 1
            continue
        prevs = view.u64_descending(current - 12, step, count)
        expected = current - (np.arange(1, count + 1, dtype=np.int64) * step)
        mismatch = np.flatnonzero(prevs != expected)
        accepted = int(mismatch[0]) if mismatch.size else count
        _add_run(runs, current, step, accepted)
        current -= accepted * step
        if accepted == count:
            chunk = min(chunk * 4, 1 << 20)
        else:
            chunk = 16
            scalar_budget = 32 if accepted < 4 else 0
    chain = Chain(runs)
    bad = _first_malformed(view, chain)
    if bad is not None:
        return WalkResult(None, bad)
    return WalkResult(runs)


def _first_malformed(view: FileView, chain: Chain) -> int | None:
    """End of the newest entry whose payload would be empty (padding reaching the metadata).

    A link of `step` bytes leaves `step - 20 - pad` payload bytes; links over 83 bytes always
    leave some, so only short links need looking at.
    """
    if not any(step <= ALIGNMENT + METADATA_SIZE - 1 for _, step, _ in chain.runs):
        return None
    metas, prevs, tomb = chain.entries(view)
    starts = prevs + (-prevs & (ALIGNMENT - 1))
    bad = np.flatnonzero(~tomb & (starts >= metas))
    return int(metas[bad[0]]) + METADATA_SIZE if bad.size else None


def entry_crc_ok(view: FileView, tail: int) -> bool:
    """Whether the entry ending at `tail` is well formed and its CRC-32 matches its payload."""
    meta = tail - METADATA_SIZE
    _key_hash, prev, checksum = METADATA.unpack_from(view.mm, meta)
    if not _link_ok(prev, tail):
        return False
    if meta - prev == 1 and view.buf[prev] == 0:
        return checksum == TOMBSTONE_CRC
    start = prev + pad_for(prev)
    if start >= meta:
        return False
    with memoryview(view.mm) as whole:
        return zlib.crc32(whole[start:meta]) == checksum


def _short_walk_ok(view: FileView, tail: int) -> bool:
    """A few links back from `tail` are plausible: a cheap filter before a CRC over a big payload."""
    current = view.u64(tail - 12)
    for _ in range(_SHORT_WALK_LINKS):
        if current == 0:
            return True
        if current < MIN_ENTRY_END or current >= tail:
            return False
        prev = view.u64(current - 12)
        if not _link_ok(prev, current):
            return False
        current = prev
    return True


def candidate_ok(view: FileView, tail: int) -> bool:
    """Cheap checks, then the CRC, for a possible chain end."""
    if tail < MIN_ENTRY_END or tail > view.size:
        return False
    key_hash, prev, checksum = METADATA.unpack_from(view.mm, tail - METADATA_SIZE)
    if key_hash == 0 and prev == 0 and checksum == 0:  # zero fill (e.g. a file extended by a crash)
        return False
    return _link_ok(prev, tail) and _short_walk_ok(view, tail) and entry_crc_ok(view, tail)


def _plausible_candidates(view: FileView, low: int, high: int) -> np.ndarray:
    """Candidate ends in [low, high], newest first, whose prev field passes the link rule."""
    count = high - low + 1
    ends = np.arange(low, high + 1, dtype=np.int64)
    prevs = view.u64_range(low - 12, count).astype(np.int64)
    metas = ends - METADATA_SIZE
    in_range = (prevs >= MIN_ENTRY_END) & (prevs <= metas - 1)
    # Payload shape: a tombstone byte right before the metadata, or an aligned non-empty payload.
    in_range &= (metas - prevs == 1) | (prevs + (-prevs & 63) < metas)
    linked = np.flatnonzero(in_range)
    if linked.size:  # the entry before must link on too (vectorised first step of the walk)
        back = view.u64_at(prevs[linked] - 12).astype(np.int64)
        ok = (back == 0) | ((back >= MIN_ENTRY_END) & (back <= prevs[linked] - METADATA_SIZE - 1))
        in_range[linked[~ok]] = False
    plausible = in_range | (prevs == 0)
    zero_prev = np.flatnonzero(prevs == 0)
    if zero_prev.size:  # drop zero fill: hash, prev and CRC all zero
        hashes = view.u64_range(low - METADATA_SIZE, count)[zero_prev]
        checks = view.u64_range(low - 8, count)[zero_prev] >> np.uint64(32)
        plausible[zero_prev[(hashes == 0) & (checks == 0)]] = False
    return ends[plausible][::-1]


def find_chain(view: FileView, scan_limit: int | None = None) -> Chain | None:
    """The newest valid chain in the file, or None when none is found.

    `scan_limit` bounds how far before the file end recovery searches (None: the whole file),
    so that a file broken in the middle is refused rather than cut down at open; callers also
    refuse to truncate more than their limit (see DataStore.max_recover_bytes).
    """
    size = view.size
    if size == 0:
        return Chain([])
    if candidate_ok(view, size):
        result = walk_chain(view, size)
        if result.runs is not None:
            return _verify_tail_window(view, Chain(result.runs), size)
        high = result.broken_at - 1
    else:
        high = size - 1
    floor = MIN_ENTRY_END if scan_limit is None else max(MIN_ENTRY_END, size - scan_limit)
    window = 1 << 12
    while high >= floor:
        low = max(floor, high - window + 1)
        for tail in _plausible_candidates(view, low, high).tolist():
            if tail > high or not candidate_ok(view, tail):
                continue
            result = walk_chain(view, tail)
            if result.runs is not None:
                return _verify_tail_window(view, Chain(result.runs), size)
            high = result.broken_at - 1  # everything above the break hangs off a broken link
        high = min(high, low - 1)
        window = min(window * 2, 1 << 20)
    return None


def _verify_tail_window(view: FileView, chain: Chain, size: int) -> Chain:
    """CRC-check the entries ending in the last TAIL_VERIFY_BYTES and note any failures.

    A crash leaves a file cut short (handled by the candidate checks: the newest entry must
    pass its CRC); a bad entry *followed by good ones* is damage, not a torn tail, so it is
    reported (open logs it, `store check` lists it) and nothing after it is thrown away.
    """
    chain.dropped_bytes = size - chain.end
    recent = chain.recent_tails(TAIL_VERIFY_BYTES)
    bad = [tail for tail in recent if not entry_crc_ok(view, tail)]
    if bad:
        chain.notes.append(
            f"{len(bad)} entries near the end fail their CRC-32 (ending at bytes {bad[:5]}); "
            "they were kept: run `narrative-pipeline store check` for a full report"
        )
    return chain


@dataclass
class ChainStats:
    entries: int
    tombstones: int
    live_keys: int
    live_bytes: int  # bytes (padding + payload + metadata) of the newest live entry of each key
    crc_failures: list[int]  # end offsets of entries whose CRC does not match (when verified)


def chain_stats(view: FileView, chain: Chain, verify_crc: bool) -> ChainStats:
    """Counts for `store check`; optionally CRC-verifies every entry."""
    tails = chain.tails()
    metas, prevs, tomb = chain.entries(view)
    hashes = chain.hashes(view)
    newest = newest_per_key(hashes)
    live = newest[~tomb[newest]]
    crc_failures = _crc_failures(view, tails, metas, prevs, tomb) if verify_crc else []
    return ChainStats(
        entries=len(tails),
        tombstones=int(np.count_nonzero(tomb)),
        live_keys=len(live),
        live_bytes=int((tails[live] - prevs[live]).sum()),
        crc_failures=crc_failures,
    )


def _crc_failures(
    view: FileView, tails: np.ndarray, metas: np.ndarray, prevs: np.ndarray, tomb: np.ndarray
) -> list[int]:
    """End offsets of entries whose CRC-32 does not match, in file order.

    Small equal-size payloads are checked in vectorised chunks (crc32_fixed); the rest, and
    tombstones, one by one.
    """
    starts = prevs + (-prevs & 63)
    lengths = np.where(tomb, 0, metas - starts)
    stored = view.u32_at(metas + 16)
    bad: list[int] = []
    by_loop = tomb | (lengths > SMALL_CRC_MAX)
    for length in np.unique(lengths[~by_loop]).tolist():
        group = np.flatnonzero((lengths == length) & ~by_loop)
        columns = np.arange(length, dtype=np.int64)
        for first in range(0, len(group), _CRC_CHUNK):
            part = group[first : first + _CRC_CHUNK]
            rows = view.buf[starts[part][:, None] + columns]
            wrong = crc32_fixed(rows) != stored[part]
            bad += tails[part[wrong]].tolist()
    bad += [t for t in tails[by_loop].tolist() if not entry_crc_ok(view, t)]
    return sorted(bad)


def newest_per_key(hashes: np.ndarray) -> np.ndarray:
    """Indices (into a newest-first array) of the first occurrence of each hash, sorted by hash.

    One plain sort of (top hash bits | index) packed into a u64 is several times faster than a
    stable argsort; equal top bits are rare except for rewritten keys and get an exact pass.
    """
    count = len(hashes)
    if count == 0:
        return np.zeros(0, np.int64)
    index_bits = max(1, (count - 1).bit_length())
    shift = np.uint64(index_bits)
    packed = np.right_shift(hashes, shift)  # in-place steps below: 10M entries = 80 MB each
    np.left_shift(packed, shift, out=packed)
    np.bitwise_or(packed, np.arange(count, dtype=np.uint64), out=packed)
    packed.sort()
    # Neighbours with equal top bits: their xor is below 2**index_bits.
    same_top = np.bitwise_xor(packed[1:], packed[:-1]) < np.uint64(1 << index_bits)
    np.bitwise_and(packed, np.uint64((1 << index_bits) - 1), out=packed)
    order = packed.view(np.int64)  # index bits only: fits int64
    if not same_top.any():
        return order
    in_group = np.zeros(count, bool)
    in_group[1:] |= same_top
    in_group[:-1] |= same_top
    group_pos = np.flatnonzero(in_group)
    members = order[group_pos]
    # Within groups sharing top bits: sort by (full hash, index) so the newest copy comes first.
    exact = np.lexsort((members, hashes[members]))
    members = members[exact]
    member_hashes = hashes[members]
    first_copy = np.ones(len(members), bool)
    first_copy[1:] = member_hashes[1:] != member_hashes[:-1]
    # Positions group_pos keep their (sorted-by-top-bits) place; refill them in exact order.
    order[group_pos] = members
    keep = np.ones(count, bool)
    keep[group_pos] = first_copy
    return order[keep]


@dataclass
class StoreReport:
    """What `store check` found; `lines()` renders it."""

    path: str
    file_size: int
    valid_end: int
    dropped_bytes: int
    stats: ChainStats
    notes: list[str]

    @property
    def dead_bytes(self) -> int:
        """Bytes a compaction would reclaim: superseded and deleted entries (with their padding)."""
        return self.valid_end - self.stats.live_bytes

    @property
    def clean(self) -> bool:
        return not self.dropped_bytes and not self.stats.crc_failures

    def lines(self) -> list[str]:
        s = self.stats
        out = [
            f"store: {self.path}",
            f"file size: {self.file_size} bytes",
            f"entries: {s.entries} ({s.tombstones} tombstones)",
            f"live keys: {s.live_keys}",
            f"dead bytes: {self.dead_bytes} (reclaimable by compaction)",
            f"valid end: byte {self.valid_end}",
            f"torn/garbage tail: {self.dropped_bytes} bytes",
            f"CRC failures: {len(s.crc_failures)}"
            + (f" (entries ending at {s.crc_failures[:5]})" if s.crc_failures else ""),
        ]
        out += [f"note: {note}" for note in self.notes]
        out.append("status: OK" if self.clean else "status: PROBLEMS FOUND")
        return out


def inspect_store(path: str | os.PathLike[str], verify_crc: bool = True) -> StoreReport:
    """Analyse a store file without modifying it (the whole file is searched, no limits)."""
    from narrative_pipeline.store.errors import CorruptStoreError, StoreError

    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, not a store file")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        view = FileView(fd, size)
        try:
            chain = find_chain(view, scan_limit=None)
            if chain is None:
                raise CorruptStoreError(
                    f"{path}: not a simd-r-drive store: no valid entry chain in {size} bytes"
                )
            stats = chain_stats(view, chain, verify_crc)
        finally:
            view.close()
    finally:
        os.close(fd)
    return StoreReport(os.fspath(path), size, chain.end, chain.dropped_bytes, stats, chain.notes)


__all__ = [
    "Chain",
    "ChainStats",
    "FileView",
    "TAIL_VERIFY_BYTES",
    "chain_stats",
    "candidate_ok",
    "entry_crc_ok",
    "find_chain",
    "inspect_store",
    "newest_per_key",
    "walk_chain",
    "U32",
]
