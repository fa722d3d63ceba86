"""simd-r-drive's RPC methods: ids and the bitcode shapes of their requests and responses.

Shared by the server (decode requests, encode responses) and our client (the reverse), so the
two sides can never disagree. Method ids are xxh3_64 of the method name, as the Rust service
definitions compute them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from narrative_pipeline.store import bitcode
from narrative_pipeline.store.bitcode import Reader

METHOD_IDS = {
    "write": 0x3EC2AD5C308C53DA,
    "batch_write": 0xB0207C59D9B60457,
    "read": 0x2C2622A151F2CDF2,
    "batch_read": 0x01030B148B7284C2,
    "delete": 0x42DBBAC7F7E9DEFD,
    "exists": 0xCB471C821989C086,
    "len": 0xA41DBB760E96E3E3,
    "is_empty": 0x34E05A9B282D0770,
    "file_size": 0x720EA1F40D3468C2,
}
METHOD_NAMES = {method_id: name for name, method_id in METHOD_IDS.items()}
KEY_METHODS = ("read", "delete", "exists")  # request struct { key: Vec<u8> }
NO_ARG_METHODS = ("len", "is_empty", "file_size")  # request is an empty struct


# ---------------------------------------------------------------------------- requests


def encode_request(method: str, *args: object) -> bytes:
    """The bitcode bytes of a method's request struct (the official client's byte layout).

    `args` are the method's arguments as the client API takes them (their types follow from
    `method`: bytes keys and payloads, a list of (key, payload) pairs, a list of keys)."""
    if method == "write":
        key, payload = cast("tuple[bytes, bytes]", args)
        return bitcode.encode_byte_vecs([key]) + bitcode.encode_byte_vecs([payload])
    if method in KEY_METHODS:
        return bitcode.encode_byte_vecs([cast(bytes, args[0])])
    if method == "batch_write":
        entries = cast("list[tuple[bytes, bytes]]", args[0])
        return (
            bitcode.encode_lengths([len(entries)])
            + bitcode.encode_byte_vecs([k for k, _ in entries])
            + bitcode.encode_byte_vecs([v for _, v in entries])
        )
    if method == "batch_read":
        keys = cast("list[bytes]", args[0])
        return bitcode.encode_lengths([len(keys)]) + bitcode.encode_byte_vecs(keys)
    if method in NO_ARG_METHODS:
        return b""
    raise ValueError(f"unknown method {method!r}")


def decode_request(method: str, data: bytes | memoryview) -> tuple:
    """The arguments of a request, as a tuple; raises BitcodeError on malformed input."""
    reader = Reader(data)
    if method == "write":
        (key,) = bitcode.decode_byte_vecs(reader, 1)
        (payload,) = bitcode.decode_byte_vecs(reader, 1)
        args: tuple = (key, payload)
    elif method in KEY_METHODS:
        args = tuple(bitcode.decode_byte_vecs(reader, 1))
    elif method == "batch_write":
        n = _outer_length(reader)
        keys = bitcode.decode_byte_vecs(reader, n)
        payloads = bitcode.decode_byte_vecs(reader, n)
        args = (list(zip(keys, payloads, strict=True)),)
    elif method == "batch_read":
        n = _outer_length(reader)
        args = (bitcode.decode_byte_vecs(reader, n),)
    elif method in NO_ARG_METHODS:
        args = ()
    else:
        raise ValueError(f"unknown method {method!r}")
    reader.expect_end(f"{method} request")
    return args


def _outer_length(reader: Reader) -> int:
    n = int(bitcode.decode_lengths(reader, 1)[0])
    # Each element needs at least one length byte or bit; a bigger count is a lie.
    if n > reader.remaining() * 8 + 8:
        raise bitcode.BitcodeError(
            f"declared {n} entries but only {reader.remaining()} bytes follow"
        )
    return n


# ---------------------------------------------------------------------------- responses


def encode_response(method: str, result: object) -> bytes:
    """The bitcode bytes of a method's response struct (`result`'s type follows from `method`,
    as `decode_response` gives it back)."""
    if method in ("write", "batch_write", "delete", "len", "file_size"):
        return bitcode.encode_u64_column([int(cast(int, result))])
    if method == "read":
        return bitcode.encode_option_byte_vecs([cast("bytes | None", result)])
    if method == "batch_read":
        items = cast("Sequence[bytes | None]", result)
        return bitcode.encode_lengths([len(items)]) + bitcode.encode_option_byte_vecs(list(items))
    if method in ("exists", "is_empty"):
        return bitcode.encode_bool_column([bool(result)])
    raise ValueError(f"unknown method {method!r}")


def decode_response(method: str, data: bytes | memoryview) -> object:
    """Inverse of `encode_response`: int, bool, bytes | None or list[bytes | None]."""
    reader = Reader(data)
    if method in ("write", "batch_write", "delete", "len", "file_size"):
        result: object = int(bitcode.decode_u64_column(reader, 1)[0])
    elif method == "read":
        (result,) = bitcode.decode_option_byte_vecs(reader, 1)
    elif method == "batch_read":
        n = _outer_length(reader)
        result = bitcode.decode_option_byte_vecs(reader, n)
    elif method in ("exists", "is_empty"):
        result = bool(bitcode.decode_bool_column(reader, 1)[0])
    else:
        raise ValueError(f"unknown method {method!r}")
    reader.expect_end(f"{method} response")
    return result
