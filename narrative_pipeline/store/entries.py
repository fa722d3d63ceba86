"""Encoding entries for appending: validation of (key, payload) pairs, padding, metadata, CRC-32.

Kept apart from DataStore so the byte layout of a batch (see format.py) is in one place; the
fixed-size path builds a whole batch of equal-size payloads as one numpy array.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from narrative_pipeline.store.crc import SMALL_CRC_MAX, crc32_fixed
from narrative_pipeline.store.format import (
    ALIGNMENT,
    METADATA,
    METADATA_SIZE,
    TOMBSTONE_BYTE,
    pad_for,
    validate_key,
    validate_payload,
)

_ZEROS = bytes(ALIGNMENT)
_META_DTYPE = np.dtype([("hash", "<u8"), ("prev", "<u8"), ("crc", "<u4")])  # packed, 20 bytes


def validate_items(items: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
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


Parts = list[bytes | bytearray | memoryview]  # written to the file in order, unjoined


def encode_entries(
    hashes: np.ndarray, payloads: list[bytes], checksums: np.ndarray | None, tail: int
) -> tuple[Parts, np.ndarray]:
    """Bytes for appending entries at `tail`, and each entry's metadata offset.

    `checksums=None` computes the CRC-32s here (vectorised for small equal-size payloads).
    """
    lengths = list(map(len, payloads))
    length = lengths[0]
    if len(payloads) > 1 and lengths.count(length) == len(lengths):
        return encode_fixed_size(hashes, payloads, checksums, tail, length)
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


def encode_fixed_size(
    hashes: np.ndarray, payloads: list[bytes], checksums: np.ndarray | None, tail: int, length: int
) -> tuple[Parts, np.ndarray]:
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
    body = records.reshape(-1).data[: (count - 1) * stride + length + METADATA_SIZE]
    parts: Parts = [_ZEROS[:lead], body] if lead else [body]
    return parts, metas
