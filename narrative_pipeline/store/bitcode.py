"""The subset of the Rust `bitcode` 0.6 format that simd-r-drive's RPC structs use.

bitcode is columnar and has no written spec; these rules come from its source
(`pack.rs`, `pack_ints.rs`, `length.rs`) and are checked against bytes captured from the
official client (see ../shared/reference/simd-r-drive.md and the tests). Only the shapes the
nine RPC methods need are implemented:

* byte columns (``u8`` values, bit/arithmetic packed when the values are small),
* lengths blocks (``Vec`` lengths: a byte column of ``min(len, 255)`` then a u64 column of
  the lengths that are >= 255),
* u64/usize columns (narrowest of 8/16/32/64 bits, optionally offset by the minimum),
* bool and Option variant columns (8 bits to a byte, no header).

Decoding is vectorised with numpy because a ``batch_read`` answer can hold millions of bytes.
Every decoder raises :class:`BitcodeError` on truncated or invalid input instead of guessing.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BitcodeError",
    "Reader",
    "decode_bool_column",
    "decode_byte_column",
    "decode_byte_vecs",
    "decode_lengths",
    "decode_option_byte_vecs",
    "decode_u64_column",
    "encode_bool_column",
    "encode_byte_column",
    "encode_byte_vecs",
    "encode_lengths",
    "encode_option_byte_vecs",
    "encode_u64_column",
]


class BitcodeError(ValueError):
    """The bytes are not a valid bitcode encoding of the expected type."""


# Byte packing: base -> (header code, values per packed byte). Base 256 means "copied as is".
_BYTE_BASE_CODE = {256: 0, 16: 1, 6: 2, 4: 3, 3: 4, 2: 5}
_CODE_BYTE_BASE = {code: base for base, code in _BYTE_BASE_CODE.items()}
_PER_BYTE = {16: 2, 6: 3, 4: 4, 3: 5, 2: 8}
# u64 packing: width in bytes -> header code (the header is code, or code - 1 when offset).
_INT_WIDTH_CODE = {8: 0, 4: 2, 2: 4, 1: 6}
_CODE_INT_WIDTH = {code: width for width, code in _INT_WIDTH_CODE.items()}
_SMALL = 64  # below this many values pure Python beats numpy's call overhead


def _byte_base(max_value: int) -> int:
    """The smallest packing base that holds values up to `max_value` (bitcode's `Packing::new`)."""
    if max_value <= 1:
        return 2
    if max_value == 2:
        return 3
    if max_value == 3:
        return 4
    if max_value <= 5:
        return 6
    if max_value <= 15:
        return 16
    return 256


def _int_width(max_value: int) -> int:
    if max_value <= 0xFF:
        return 1
    if max_value <= 0xFFFF:
        return 2
    if max_value <= 0xFFFF_FFFF:
        return 4
    return 8


class Reader:
    """A cursor over a bytes-like object; every read checks the remaining length."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes | bytearray | memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise BitcodeError(
                f"truncated input: need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise BitcodeError(f"truncated input: need 1 byte at offset {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def expect_end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise BitcodeError(f"{what}: {len(self.data) - self.pos} unexpected trailing bytes")


# ---------------------------------------------------------------------------- packing helpers


def _pack_digits(values: bytes, base: int) -> bytes:
    """Group values `k` to a byte, first value in the lowest digit (bitcode `pack_arithmetic`)."""
    k = _PER_BYTE[base]
    n = len(values)
    if n < _SMALL:
        out = bytearray()
        for start in range(0, n, k):
            acc = 0
            for v in reversed(values[start : start + k]):
                acc = acc * base + v
            out.append(acc)
        return bytes(out)
    arr = np.frombuffer(values, dtype=np.uint8)
    if base == 2:
        return np.packbits(arr, bitorder="little").tobytes()
    padded = np.zeros(-(-n // k) * k, dtype=np.uint16)
    padded[:n] = arr
    powers = base ** np.arange(k, dtype=np.uint16)
    return (padded.reshape(-1, k) * powers).sum(axis=1).astype(np.uint8).tobytes()


def _unpack_digits(packed: bytes | bytearray | memoryview, n: int, base: int) -> bytes:
    """Inverse of `_pack_digits`: `n` values out of ceil(n / k) packed bytes."""
    k = _PER_BYTE[base]
    if n < _SMALL:
        out = bytearray()
        for b in bytes(packed):
            for _ in range(k):
                out.append(b % base)
                b //= base
        return bytes(out[:n])
    arr = np.frombuffer(packed, dtype=np.uint8)
    if base == 2:
        return np.unpackbits(arr, count=n, bitorder="little").tobytes()
    digits = np.empty((len(arr), k), dtype=np.uint8)
    rest = arr.copy()
    for j in range(k):
        digits[:, j] = rest % base
        rest //= base
    return digits.reshape(-1)[:n].tobytes()


# ---------------------------------------------------------------------------- byte columns


def encode_byte_column(values: bytes) -> bytes:
    """A column of u8 values: raw when n <= 2, else a packing header then packed data."""
    n = len(values)
    if n <= 2:
        return bytes(values)
    if n < _SMALL:
        lo, hi = min(values), max(values)
    else:
        arr = np.frombuffer(values, dtype=np.uint8)
        lo, hi = int(arr.min()), int(arr.max())
    base = _byte_base(hi)
    offset_base = _byte_base(hi - lo)
    if offset_base < base and n > 5:
        if n < _SMALL:
            shifted = bytes(v - lo for v in values)
        else:
            shifted = (np.frombuffer(values, dtype=np.uint8) - np.uint8(lo)).tobytes()
        header = bytes((_BYTE_BASE_CODE[offset_base] * 2 - 1, lo))
        return header + _pack_digits(shifted, offset_base)
    header = bytes((_BYTE_BASE_CODE[base] * 2,))
    if base == 256:
        return header + bytes(values)
    return header + _pack_digits(values, base)


def decode_byte_column(reader: Reader, n: int) -> bytes | bytearray | memoryview:
    """Read `n` u8 values written by `encode_byte_column` (or by Rust bitcode)."""
    if n <= 2:
        return reader.take(n)
    header = reader.byte()
    code, offset = (header + 1) // 2, header & 1
    if code not in _CODE_BYTE_BASE:
        raise BitcodeError(f"invalid byte packing header {header}")
    base = _CODE_BYTE_BASE[code]
    lo = reader.byte() if offset else 0
    if base == 256:
        if offset:
            raise BitcodeError("invalid byte packing header: raw bytes cannot be offset")
        return reader.take(n)
    values = _unpack_digits(reader.take(-(-n // _PER_BYTE[base])), n, base)
    if lo:
        if n < _SMALL:
            values = bytes((v + lo) & 0xFF for v in values)
        else:
            values = (np.frombuffer(values, dtype=np.uint8) + np.uint8(lo)).tobytes()
    return values


# ---------------------------------------------------------------------------- u64 columns


def encode_u64_column(values: list[int] | np.ndarray) -> bytes:
    """A column of u64 values (also used for usize): header, optional min, then the data."""
    n = len(values)
    if n == 0:
        return b""
    if n == 1:  # a single value (every write/len/size answer): no numpy round trip
        value = int(values[0])
        width = _int_width(value)
        return bytes((_INT_WIDTH_CODE[width],)) + value.to_bytes(width, "little")
    arr = np.asarray(values, dtype=np.uint64)
    sample = arr[:16]
    if _int_width(int(sample.max()) - int(sample.min())) == 8:
        return b"\x00" + arr.astype("<u8").tobytes()
    lo, hi = int(arr.min()), int(arr.max())
    width, offset_width = _int_width(hi), _int_width(hi - lo)
    if offset_width < width and n > 5:
        header = bytes((_INT_WIDTH_CODE[offset_width] - 1,)) + lo.to_bytes(8, "little")
        return header + _pack_int_data(arr - np.uint64(lo), offset_width)
    return bytes((_INT_WIDTH_CODE[width],)) + _pack_int_data(arr, width)


def _pack_int_data(arr: np.ndarray, width: int) -> bytes:
    if width == 1:
        return encode_byte_column(arr.astype(np.uint8).tobytes())
    return arr.astype(f"<u{width}").tobytes()


def decode_u64_column(reader: Reader, n: int) -> np.ndarray:
    """Read `n` u64 values; returns a uint64 array."""
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    header = reader.byte()
    code = header + (header & 1)
    if code not in _CODE_INT_WIDTH or header == 0xFF:
        raise BitcodeError(f"invalid integer packing header {header}")
    width = _CODE_INT_WIDTH[code]
    lo = int.from_bytes(reader.take(8), "little") if header & 1 else 0
    if n == 1 and width > 1:
        return np.array(
            [(int.from_bytes(reader.take(width), "little") + lo) & 0xFFFF_FFFF_FFFF_FFFF],
            dtype=np.uint64,
        )
    if width == 1:
        arr = np.frombuffer(decode_byte_column(reader, n), dtype=np.uint8).astype(np.uint64)
    else:
        arr = np.frombuffer(reader.take(n * width), dtype=f"<u{width}").astype(np.uint64)
    if lo:
        arr = arr + np.uint64(lo)  # wraps like Rust's wrapping_add
    return arr


# ---------------------------------------------------------------------------- lengths


def encode_lengths(lengths: list[int] | np.ndarray) -> bytes:
    """Vec lengths: a byte column of min(len, 255), then a u64 column of those >= 255."""
    if isinstance(lengths, list) and (not lengths or max(lengths) < 255):
        return encode_byte_column(bytes(lengths))  # no long items: no u64 column follows
    arr = np.asarray(lengths, dtype=np.uint64)
    large: list[int] | np.ndarray
    if len(arr) < _SMALL:
        small = bytes(min(int(v), 255) for v in arr)
        large = [int(v) for v in arr if v >= 255]
    else:
        small = np.minimum(arr, 255).astype(np.uint8).tobytes()
        large = arr[arr >= 255]
    return encode_byte_column(small) + encode_u64_column(large)


def decode_lengths(reader: Reader, n: int) -> np.ndarray | list[int]:
    """Inverse of `encode_lengths`: `n` lengths, as a list when short, else a uint64 array."""
    if n < _SMALL:
        raw = bytes(decode_byte_column(reader, n))
        if 255 not in raw:
            return list(raw)
        return _with_long_lengths(reader, np.frombuffer(raw, dtype=np.uint8).astype(np.uint64))
    return _with_long_lengths(
        reader, np.frombuffer(decode_byte_column(reader, n), dtype=np.uint8).astype(np.uint64)
    )


def _with_long_lengths(reader: Reader, small: np.ndarray) -> np.ndarray:
    """Replace the 255 markers by the u64 column of long lengths that follows."""
    big = small == 255
    count = int(big.sum())
    if count:
        large = np.asarray(decode_u64_column(reader, count), dtype=np.uint64)
        if (large < 255).any():
            raise BitcodeError("invalid length: a large length below 255")
        small[big] = large
    return small


# ---------------------------------------------------------------------------- bool / option


def encode_bool_column(flags: list[bool] | np.ndarray) -> bytes:
    """Bools 8 to a byte, first in the lowest bit, no header."""
    if len(flags) == 1:
        return b"\x01" if flags[0] else b"\x00"
    return np.packbits(np.asarray(flags, dtype=bool), bitorder="little").tobytes()


def decode_bool_column(reader: Reader, n: int) -> np.ndarray | list[bool]:
    if n == 1:
        return [bool(reader.byte() & 1)]
    packed = np.frombuffer(reader.take(-(-n // 8)), dtype=np.uint8)
    return np.unpackbits(packed, count=n, bitorder="little").astype(bool)


# ---------------------------------------------------------------------------- byte vectors


def _split(data: bytes | bytearray | memoryview, lengths: np.ndarray | list[int]) -> list[bytes]:
    """Cut `data` into consecutive pieces of the given lengths."""
    n = len(lengths)
    if n == 0:
        return []
    if isinstance(lengths, list):  # short lists: plain slicing beats numpy's call overhead
        data = bytes(data)
        out, start = [], 0
        for length in lengths:
            out.append(data[start : start + length])
            start += length
        return out
    first = int(lengths[0])
    if first * n == len(data) and (lengths == first).all():  # fixed-size keys/values: common
        # numpy's raw-bytes dtype turns each record into a `bytes` object in C, 5x a slice loop.
        return np.frombuffer(data, dtype=f"V{first}").tolist() if first else [b""] * n
    data = bytes(data)
    out = []
    start = 0
    for end in np.cumsum(lengths, dtype=np.uint64).tolist():
        out.append(data[start:end])
        start = end
    return out


def encode_byte_vecs(items: list[bytes]) -> bytes:
    """A column of `Vec<u8>`: the lengths block, then one byte column of all the bytes."""
    return encode_lengths(list(map(len, items))) + encode_byte_column(b"".join(items))


def decode_byte_vecs(reader: Reader, n: int) -> list[bytes]:
    lengths = decode_lengths(reader, n)
    total = int(sum(lengths)) if isinstance(lengths, list) else int(lengths.sum())
    if total > reader.remaining() * 8:  # even base-2 packing cannot hold more than 8 per byte
        raise BitcodeError(f"declared lengths ({total} bytes) exceed the input")
    return _split(decode_byte_column(reader, total), lengths)


def encode_option_byte_vecs(items: list[bytes | None]) -> bytes:
    """A column of `Option<Vec<u8>>`: variant bits, then the present vectors as a column."""
    if None not in items:  # every key found: the usual batch_read answer
        return encode_bool_column(np.ones(len(items), dtype=bool)) + encode_byte_vecs(items)  # type: ignore[arg-type]
    present = [item for item in items if item is not None]
    return encode_bool_column([item is not None for item in items]) + encode_byte_vecs(present)


def decode_option_byte_vecs(reader: Reader, n: int) -> list[bytes | None]:
    flags = decode_bool_column(reader, n)
    count = int(sum(flags)) if isinstance(flags, list) else int(flags.sum())
    present = decode_byte_vecs(reader, count)
    if count == n:
        return present  # type: ignore[return-value]
    values = iter(present)
    flag_list = flags if isinstance(flags, list) else flags.tolist()
    return [next(values) if flag else None for flag in flag_list]
