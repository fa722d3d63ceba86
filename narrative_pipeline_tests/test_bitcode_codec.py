"""bitcode codec and muxio framing against bytes captured from the official client 0.11.1a0.

The golden frames are those in ../shared/reference/simd-r-drive.md; timestamps (bytes 13..21 of
each frame) vary per run and are ignored.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from narrative_pipeline.store import bitcode, muxio, rpc
from narrative_pipeline.store.bitcode import BitcodeError, Reader

GOLDEN_REQUESTS = [
    (
        "write",
        (b"alice", b"hello"),
        "1d000000000000000000000000e468c1f7256106000001000000da538c305cadc23e0e000500616c696365050068656c6c6f",
    ),
    (
        "batch_write",
        ([(b"k1", b"v1"), (b"key2", b"value2")],),
        "2400000000000000000000000011eaf3f72561060000010000005704b6d9597c20b01500020204006b316b657932020600763176616c756532",
    ),
    (
        "read",
        (b"alice",),
        "16000000000000000000000000933f26f8256106000001000000f2cdf251a122262c07000500616c696365",
    ),
    (
        "batch_read",
        ([b"k1", b"key2", b"zz"],),
        "1b00000000000000000000000098a858f8256106000001000000c284728b140b03010c00030462006b316b6579327a7a",
    ),
    (
        "delete",
        (b"alice",),
        "16000000000000000000000000b2358bf8256106000001000000fddee9f7c7badb4207000500616c696365",
    ),
    (
        "exists",
        (b"alice",),
        "16000000000000000000000000dd8cbdf825610600000100000086c08919821c47cb07000500616c696365",
    ),
    ("len", (), "0f00000000000000000000000015feeff8256106000001000000e3e3960e76bb1da40000"),
    ("is_empty", (), "0f000000000000000000000000cb8022f925610600000100000070072d289b5ae0340000"),
    ("file_size", (), "0f000000000000000000000000efd454f9256106000001000000c268340df4a10e720000"),
    (
        "write",
        (b"k", bytes(300)),
        "3c000000000000000000000000325b87f9256106000001000000da538c305cadc23e2d00016bff042c010a"
        + "00" * 38,
    ),
    (
        "batch_read",
        ([bytes(16)] * 3,),
        "1b00000000000000000000000012d3b9f9256106000001000000c284728b140b03010c0003001010100a000000000000",
    ),
]
GOLDEN_END_FRAME = "00000000000000000100000002e668c1f725610600"

GOLDEN_RESPONSES = [
    ("write", 25, "0619"),
    ("batch_write", 25, "0619"),
    ("delete", 25, "0619"),
    ("write", 300, "042c01"),
    ("file_size", 4294967296, "000000000001000000"),
    ("read", b"hello", "01050068656c6c6f"),
    ("read", None, "00"),
    ("batch_read", [b"v1", None, b"value2", b"\x00\x01"], "040d02620200763176616c7565320001"),
    ("exists", True, "01"),
    ("is_empty", False, "00"),
    ("len", 5, "0605"),
]


def _without_timestamp(frame: bytes) -> bytes:
    return frame[:13] + frame[21:]


@pytest.mark.parametrize(
    ("method", "args", "golden"),
    GOLDEN_REQUESTS,
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "",
)
def test_request_frames_match_golden(method: str, args: tuple, golden: str) -> None:
    expected = bytes.fromhex(golden)
    body = muxio.encode_rpc(
        muxio.MSG_CALL, 1, rpc.METHOD_IDS[method], rpc.encode_request(method, *args)
    )
    frames = muxio.encode_stream(0, body)
    assert len(frames) == 2
    assert _without_timestamp(frames[0]) == _without_timestamp(expected)
    assert _without_timestamp(frames[1]) == _without_timestamp(bytes.fromhex(GOLDEN_END_FRAME))


@pytest.mark.parametrize(
    ("method", "args", "golden"),
    GOLDEN_REQUESTS,
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "",
)
def test_golden_requests_decode(method: str, args: tuple, golden: str) -> None:
    frame = bytes.fromhex(golden)
    header, payload = muxio.decode_rpc(frame[muxio.FRAME_HEADER_SIZE :])
    assert header.msg_type == muxio.MSG_CALL and header.request_id == 1
    assert rpc.METHOD_NAMES[header.method_id] == method
    assert not len(payload)
    assert rpc.decode_request(method, header.metadata) == args


@pytest.mark.parametrize(("method", "value", "golden"), GOLDEN_RESPONSES)
def test_responses_match_golden(method: str, value: object, golden: str) -> None:
    assert rpc.encode_response(method, value).hex() == golden
    assert rpc.decode_response(method, bytes.fromhex(golden)) == value


def test_reference_blocks() -> None:
    assert bitcode.encode_lengths([300, 2, 2]).hex() == "00ff0202042c01"
    assert (
        bitcode.encode_u64_column(list(range(1000, 1010))).hex() == "05e803000000000000021032547698"
    )
    assert bitcode.decode_lengths(Reader(bytes.fromhex("00ff0202042c01")), 3).tolist() == [
        300,
        2,
        2,
    ]


@pytest.mark.parametrize(
    ("values", "header"),
    [
        (bytes([0, 1, 1, 0]), 10),  # base 2
        (bytes([2, 0, 1]), 8),  # base 3
        (bytes([3, 3, 3]), 6),  # base 4
        (bytes([5, 4, 0]), 4),  # base 6
        (bytes([15, 9, 0]), 2),  # base 16
        (bytes([16, 0, 0]), 0),  # raw
        (bytes([16] * 6), 9),  # offset by 16, then base 2
        (bytes([200, 201, 202, 203, 200, 201]), 5),  # offset by 200, base 4
        (bytes([16] * 5), 0),  # offsetting needs more than 5 values
    ],
)
def test_byte_column_headers(values: bytes, header: int) -> None:
    encoded = bitcode.encode_byte_column(values)
    assert encoded[0] == header
    assert bytes(bitcode.decode_byte_column(Reader(encoded), len(values))) == values


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000])
@pytest.mark.parametrize("top", [1, 2, 3, 5, 15, 255])
def test_byte_column_round_trip(n: int, top: int) -> None:
    rng = random.Random(n * 1000 + top)
    for low in (0, 7):
        values = bytes(min(255, low + rng.randint(0, top)) for _ in range(n))
        reader = Reader(bitcode.encode_byte_column(values) + b"tail")
        assert bytes(bitcode.decode_byte_column(reader, n)) == values
        assert reader.remaining() == 4  # consumed exactly its own bytes


@pytest.mark.parametrize(
    ("values", "header"),
    [
        ([7], 6),
        ([300], 4),
        ([70000], 2),
        ([1 << 40], 0),
        ([0, 1 << 33], 0),  # the first 16 span more than 32 bits: no packing at all
        (list(range(1000, 1010)), 5),
        ([1 << 40] * 6, 5),
        ([70000 + i for i in range(20)], 5),
        ([0, 65535, 1, 2, 3, 4], 4),
    ],
)
def test_u64_column(values: list[int], header: int) -> None:
    encoded = bitcode.encode_u64_column(values)
    assert encoded[0] == header
    assert bitcode.decode_u64_column(Reader(encoded), len(values)).tolist() == values


def test_lengths_with_long_items_and_option_columns() -> None:
    rng = random.Random(3)
    items = [
        None if rng.random() < 0.3 else rng.randbytes(rng.choice([0, 1, 8, 254, 255, 256, 70000]))
        for _ in range(300)
    ]
    encoded = bitcode.encode_option_byte_vecs(items)
    assert bitcode.decode_option_byte_vecs(Reader(encoded), len(items)) == items
    entries = [(rng.randbytes(16), rng.randbytes(rng.randint(1, 600))) for _ in range(500)]
    assert rpc.decode_request("batch_write", rpc.encode_request("batch_write", entries)) == (
        entries,
    )


def test_big_batch_round_trip() -> None:
    keys = [i.to_bytes(16, "little") for i in range(100_000)]
    assert rpc.decode_request("batch_read", rpc.encode_request("batch_read", keys)) == (keys,)
    values = [None if i % 7 == 0 else i.to_bytes(8, "little") for i in range(100_000)]
    assert rpc.decode_response("batch_read", rpc.encode_response("batch_read", values)) == values


@pytest.mark.parametrize(("method", "args", "golden"), GOLDEN_REQUESTS[:6])
def test_truncated_arguments_are_rejected(method: str, args: tuple, golden: str) -> None:
    metadata = rpc.encode_request(method, *args)
    for cut in range(len(metadata)):
        with pytest.raises(BitcodeError):
            rpc.decode_request(method, metadata[:cut])
    with pytest.raises(BitcodeError, match="trailing"):
        rpc.decode_request(method, metadata + b"\x00")


def test_invalid_headers_and_lying_counts() -> None:
    with pytest.raises(BitcodeError, match="packing header"):
        bitcode.decode_byte_column(Reader(b"\x0c" + bytes(10)), 5)
    with pytest.raises(BitcodeError, match="integer packing"):
        bitcode.decode_u64_column(Reader(b"\x07" + bytes(10)), 2)
    with pytest.raises(BitcodeError, match="truncated"):  # base 3 needs ceil(7 / 5) = 2 bytes
        bitcode.decode_byte_column(Reader(b"\x08\x01"), 7)
    lying = bitcode.encode_lengths([1_000_000]) + bitcode.encode_byte_vecs([b"k"])
    with pytest.raises(BitcodeError):
        rpc.decode_request("batch_read", lying)


def test_stream_assembler_reassembles_split_and_shared_messages() -> None:
    body_a = bytes(range(256)) * 600  # 150 KiB: Open + 2 Data + End
    body_b = b"short call"
    frames_a = muxio.encode_stream(4, body_a)
    frames_b = muxio.encode_stream(9, body_b)
    assert [f[12] for f in frames_a] == [
        muxio.KIND_OPEN,
        muxio.KIND_DATA,
        muxio.KIND_DATA,
        muxio.KIND_END,
    ]
    assembler = muxio.StreamAssembler()
    done, _ = assembler.feed(frames_a[0] + frames_b[0])
    assert done == []
    done, _ = assembler.feed(frames_a[1] + frames_b[1] + frames_a[2])
    assert done == [(9, body_b)]
    whole = frames_a[3]
    done, _ = assembler.feed(whole[:10])  # a frame split across messages waits for the rest
    assert done == [] and assembler.pending_bytes() > 0
    done, _ = assembler.feed(whole[10:])
    assert done == [(4, body_a)] and assembler.pending_bytes() == 0


def test_stream_assembler_reports_bad_frames_and_limits() -> None:
    assembler = muxio.StreamAssembler(max_stream_bytes=1000)
    done, _ = assembler.feed(
        muxio.encode_frame(1, 0, 9, b"x") + muxio.encode_frame(2, 1, muxio.KIND_END)
    )
    assert done == [] and len(assembler.problems) == 2
    done, _ = assembler.feed(
        muxio.encode_frame(3, 0, muxio.KIND_OPEN, b"head-of-call-xyz" + bytes(600))
    )
    assert done == [] and not assembler.overflowed
    done, _ = assembler.feed(muxio.encode_frame(3, 1, muxio.KIND_DATA, bytes(600)))
    assert assembler.overflowed == [(3, b"head-of-call-xy")] and assembler.pending_bytes() == 0
    done, _ = assembler.feed(
        muxio.encode_frame(3, 2, muxio.KIND_DATA, b"x") + muxio.encode_frame(3, 3, muxio.KIND_END)
    )
    assert (
        done == [] and len(assembler.problems) == 2
    )  # the rest of the refused stream is dropped quietly


def test_rpc_header_with_lying_metadata_length() -> None:
    body = muxio.encode_rpc(muxio.MSG_CALL, 7, rpc.METHOD_IDS["read"], b"abc")
    lying = body[:13] + (500).to_bytes(2, "little") + body[15:]
    with pytest.raises(muxio.FrameError, match="metadata length 500"):
        muxio.decode_rpc(lying)
    header, payload = muxio.decode_rpc(body + b"pay")
    assert (header.request_id, header.metadata, bytes(payload)) == (7, b"abc", b"pay")


def test_bool_column_bit_order() -> None:
    flags = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    encoded = bitcode.encode_bool_column(flags)
    assert encoded == bytes([0b00001101, 0b1])
    assert bitcode.decode_bool_column(Reader(encoded), 9).tolist() == flags.tolist()
