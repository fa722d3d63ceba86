"""The simd-r-drive on-disk format (engine >= 0.15): constants and scalar entry helpers.

No header; entries back to back from byte 0. A normal entry appended when the file ends at `P`
is `pad(P)` zero bytes, the payload (64-byte aligned), then 20 bytes of metadata:
`key_hash u64 LE | prev_offset u64 LE (= P) | crc32 u32 LE (of the payload)`. A tombstone is a
single 0x00 byte at `P` (no padding) followed by metadata with the CRC of b"\\x00".
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

ALIGNMENT = 64
METADATA_SIZE = 20
TOMBSTONE_BYTE = b"\x00"
TOMBSTONE_CRC = zlib.crc32(TOMBSTONE_BYTE)  # stored as 8d ef 02 d2
# The smallest possible first entry (1-byte payload + metadata) ends here; any nonzero
# prev_offset must be at least this large.
MIN_ENTRY_END = 1 + METADATA_SIZE

METADATA = struct.Struct("<QQI")
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")


def pad_for(offset: int) -> int:
    """Zero bytes written before a payload appended at `offset` (payloads start 64-aligned)."""
    return -offset & (ALIGNMENT - 1)


def pack_metadata(key_hash: int, prev_offset: int, checksum: int) -> bytes:
    """The 20 metadata bytes closing an entry."""
    return METADATA.pack(key_hash, prev_offset, checksum)


class Metadata(NamedTuple):
    key_hash: int
    prev_offset: int
    checksum: int


def unpack_metadata(buffer: bytes | memoryview, offset: int) -> Metadata:
    """Decode the metadata starting at `offset`."""
    return Metadata(*METADATA.unpack_from(buffer, offset))


def payload_bounds(
    buffer: bytes | memoryview, meta_offset: int, prev_offset: int
) -> tuple[int, int, bool]:
    """(start, end, is_tombstone) of the payload of the entry whose metadata starts at `meta_offset`."""
    if meta_offset - prev_offset == 1 and buffer[prev_offset] == 0:
        return prev_offset, meta_offset, True
    return prev_offset + pad_for(prev_offset), meta_offset, False


def validate_payload(payload: object, where: str) -> bytes:
    """Return `payload` as bytes, or raise for what the format cannot store.

    Empty payloads cannot be told apart from nothing and a lone 0x00 is the tombstone marker, so
    the reference engine refuses both; so do we, before anything is written.
    """
    from narrative_pipeline.store.errors import InvalidPayloadError

    if not isinstance(payload, bytes):
        if isinstance(payload, bytearray | memoryview):
            payload = bytes(payload)
        else:
            raise TypeError(f"{where}: payload must be bytes, got {type(payload).__name__}")
    if not payload:
        raise InvalidPayloadError(
            f"{where}: empty payload is not allowed by the simd-r-drive format"
        )
    if payload == TOMBSTONE_BYTE:
        raise InvalidPayloadError(
            f"{where}: a payload of exactly b'\\x00' is reserved for tombstones (deletes)"
        )
    return payload


def validate_key(key: object, where: str) -> bytes:
    """Return `key` as bytes or raise TypeError; keys are hashed, so any length works (even empty)."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"{where}: key must be bytes, got {type(key).__name__}")
