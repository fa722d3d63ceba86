"""Key hashing shared with simd-r-drive: xxh3_64 (seed 0) and the official NamespaceHasher."""

from __future__ import annotations

import struct

import numpy as np
from xxhash import xxh3_64_intdigest

__all__ = ["key_hash", "hash_keys", "NamespaceHasher", "xxh3_64_intdigest"]

_U64 = struct.Struct("<Q")


def key_hash(key: bytes) -> int:
    """The 64-bit hash simd-r-drive stores in every entry's metadata for `key`."""
    return xxh3_64_intdigest(key)


# XXH3 (seed 0, default secret) for 9..16-byte inputs: secret bytes 24..55 folded into two
# constants, as XXH3_len_9to16_64b does. Verified against the xxhash package in the tests.
_BITFLIP_LO = np.uint64(0x6782737BEA4239B9)
_BITFLIP_HI = np.uint64(0xAF56BC3B0996523A)
_PRIME_MX2 = np.uint64(0x165667919E3779F9)
_LOW32 = np.uint64(0xFFFFFFFF)
_U32 = np.uint64(32)
_VECTOR_MIN = 64  # below this many keys the per-key loop is as fast


def hash_keys(keys: list[bytes]) -> np.ndarray:
    """xxh3_64 of every key as a uint64 array; raises TypeError for a key that is not bytes.

    Keys of 16 bytes (what NamespaceHasher makes) are hashed with numpy from one joined buffer:
    joining touches each key object once in C, where a per-key call costs far more when the
    keys are scattered in memory (random-order batch reads).
    """
    count = len(keys)
    try:
        joined = b"".join(keys)
    except TypeError:
        bad = next(
            i for i, k in enumerate(keys) if not isinstance(k, bytes | bytearray | memoryview)
        )
        raise TypeError(f"key {bad}: key must be bytes, got {type(keys[bad]).__name__}") from None
    if count >= _VECTOR_MIN and len(joined) == 16 * count and set(map(len, keys)) == {16}:
        return _xxh3_16(np.frombuffer(joined, "<u8").reshape(count, 2))
    return np.fromiter(map(xxh3_64_intdigest, keys), np.uint64, count)


def _xxh3_16(words: np.ndarray) -> np.ndarray:
    """XXH3_len_9to16_64b for 16-byte inputs given as (n, 2) little-endian u64 words."""
    low = words[:, 0] ^ _BITFLIP_LO
    high = words[:, 1] ^ _BITFLIP_HI
    acc = low.byteswap() + high + _mul128_fold64(low, high) + np.uint64(16)
    acc ^= acc >> np.uint64(37)
    acc *= _PRIME_MX2
    acc ^= acc >> _U32
    return acc


def _mul128_fold64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b) as 128 bits, low half xor high half; from 32-bit halves (numpy has no u128)."""
    a_lo, a_hi = a & _LOW32, a >> _U32
    b_lo, b_hi = b & _LOW32, b >> _U32
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    hi_hi = a_hi * b_hi
    cross = (lo_lo >> _U32) + (hi_lo & _LOW32) + lo_hi
    upper = (hi_lo >> _U32) + (cross >> _U32) + hi_hi
    lower = (cross << _U32) | (lo_lo & _LOW32)
    return lower ^ upper


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
