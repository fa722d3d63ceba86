"""Key hashing shared with simd-r-drive: xxh3_64 (seed 0) and the official NamespaceHasher."""

from __future__ import annotations

import struct

from xxhash import xxh3_64_intdigest

__all__ = ["key_hash", "NamespaceHasher", "xxh3_64_intdigest"]

_U64 = struct.Struct("<Q")


def key_hash(key: bytes) -> int:
    """The 64-bit hash simd-r-drive stores in every entry's metadata for `key`."""
    return xxh3_64_intdigest(key)


class NamespaceHasher:
    """Scopes keys to a namespace exactly like the official client's `NamespaceHasher`.

    `namespace(key)` is `LE64(xxh3_64(prefix)) || LE64(xxh3_64(key))`, 16 bytes, so keys written
    through this class and through the Rust/PyPI implementation address the same entries.
    """

    __slots__ = ("_prefix_bytes",)

    def __init__(self, prefix: bytes) -> None:
        if not isinstance(prefix, bytes | bytearray | memoryview):
            raise TypeError(f"namespace prefix must be bytes, got {type(prefix).__name__}")
        self._prefix_bytes = _U64.pack(xxh3_64_intdigest(bytes(prefix)))

    def namespace(self, key: bytes) -> bytes:
        """The 16-byte namespaced key for `key`."""
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError(f"key must be bytes, got {type(key).__name__}")
        return self._prefix_bytes + _U64.pack(xxh3_64_intdigest(bytes(key)))
