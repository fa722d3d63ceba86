"""Compaction's building blocks: copying the live entries into a fresh file, sizing entries.

The swap itself (fsync, atomic rename, switching the open DataStore to the new file) is
`DataStore.compact`; the policy (when to compact) is `DataStore.compaction_due`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narrative_pipeline.store.entries import encode_entries
from narrative_pipeline.store.errors import CorruptStoreError
from narrative_pipeline.store.files import write_all
from narrative_pipeline.store.format import ALIGNMENT, METADATA_SIZE
from narrative_pipeline.store.recovery import FileView

_COMPACT_CHUNK = 1 << 16


@dataclass(frozen=True)
class CompactionResult:
    size_before: int
    size_after: int
    live_entries: int


def entry_bytes(view: FileView, metas: np.ndarray) -> int:
    """Total size of the entries whose metadata starts at `metas` (each: prev_offset to its end)."""
    if not len(metas):
        return 0
    prevs = view.u64_at(metas + 8).astype(np.int64)
    return int((metas + METADATA_SIZE - prevs).sum())


def copy_live_entries(
    view: FileView, hashes: np.ndarray, metas: np.ndarray, out_fd: int, path: Path
) -> np.ndarray:
    """Write the entries at `metas` (file order) back to back into `out_fd`, re-checking CRCs.

    Returns each entry's new metadata offset. A CRC mismatch aborts (the original is untouched).
    """
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
                f"{path}: entry with metadata at byte {int(chunk_metas[bad])} fails its "
                "CRC-32; compaction aborted, original file unchanged"
            )
        parts, chunk_new = encode_entries(chunk_hashes, payloads, checksums, out_tail)
        data = b"".join(parts)
        write_all(out_fd, data, out_tail)
        out_tail += len(data)
        new_metas.append(chunk_new)
    metas_out = np.concatenate(new_metas) if new_metas else np.zeros(0, np.int64)
    return metas_out
