"""RFC 6455 framing shared by the store server and our client (narrative_pipeline.store.websocket)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from narrative_pipeline.store import websocket


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70_000])
@pytest.mark.parametrize("mask", [True, False])
def test_frames_round_trip_and_wait_for_their_last_byte(length: int, mask: bool) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    frame = websocket.encode_frame(websocket.OP_BINARY, payload, mask=mask, fin=False)
    buf = bytearray(b"junk" + frame + b"next")
    assert websocket.parse_frame(buf[: 4 + len(frame) - 1], 4) is None  # one byte short
    assert websocket.parse_frame(buf[:5], 4) is None
    fin, opcode, got, end = websocket.parse_frame(buf, 4)
    assert (fin, opcode, got, end) == (False, websocket.OP_BINARY, payload, 4 + len(frame))
    assert bool(frame[1] & 0x80) is mask


def test_masking_uses_a_fresh_key_and_hides_the_payload() -> None:
    first = websocket.encode_frame(websocket.OP_TEXT, b"secret!!", mask=True)
    second = websocket.encode_frame(websocket.OP_TEXT, b"secret!!", mask=True)
    assert b"secret" not in first and first != second


def test_server_view_refuses_unmasked_reserved_and_oversized_frames() -> None:
    unmasked = bytearray(websocket.encode_frame(websocket.OP_BINARY, b"x", mask=False))
    with pytest.raises(websocket.ProtocolError) as refused:
        websocket.parse_frame(unmasked, 0, require_mask=True)
    assert refused.value.code == 1002
    reserved = bytearray(websocket.encode_frame(websocket.OP_BINARY, b"x", mask=True))
    reserved[0] |= 0x40
    with pytest.raises(websocket.ProtocolError):
        websocket.parse_frame(reserved, 0, require_mask=True)
    assert websocket.parse_frame(reserved, 0) is not None  # the client side does not check
    # Only the header of a 1 MB frame is here: refused before its payload arrives.
    header_only = bytearray(websocket.frame_header(websocket.OP_BINARY, 10**6, masked=True))
    with pytest.raises(websocket.ProtocolError) as too_big:
        websocket.parse_frame(header_only, 0, require_mask=True, max_length=1000)
    assert too_big.value.code == 1009


def test_accept_key_matches_rfc_6455_example() -> None:
    assert websocket.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    key = websocket.new_key()
    assert len(base64.b64decode(key)) == 16
    expected = base64.b64encode(hashlib.sha1(key + websocket.GUID).digest())
    assert websocket.accept_key(key) == expected
