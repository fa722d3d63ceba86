"""muxio framing as simd-r-drive's WebSocket transport uses it.

A muxio *frame* is a 21-byte little-endian header (u32 payload length, u32 stream id,
u32 sequence id, u8 kind, u64 timestamp in microseconds) followed by the payload. One RPC
message is a *stream*: an Open frame, optional Data frames, and an End frame. Several frames may
share one WebSocket message and one stream may span several messages, so the receiving side
buffers per stream id until End (`StreamAssembler`).

The RPC header at the start of a stream's bytes: u8 message type (0 Call, 1 Response, 2 Event),
u32 request id, u64 method id, u16 metadata length, metadata bytes; the rest is the payload.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

FRAME_HEADER = struct.Struct("<IIIBQ")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 21
RPC_HEADER = struct.Struct("<BIQH")
RPC_HEADER_SIZE = RPC_HEADER.size  # 15
CHUNK_SIZE = 64 * 1024  # muxio's default frame payload size; longer streams use Data frames
MAX_METADATA = 0xFFFF

KIND_OPEN, KIND_DATA, KIND_END, KIND_CANCEL, KIND_PONG, KIND_PING = range(6)
MSG_CALL, MSG_RESPONSE, MSG_EVENT = range(3)
STATUS_SUCCESS, STATUS_FAIL, STATUS_SYSTEM_ERROR, STATUS_METHOD_NOT_FOUND = range(4)


class FrameError(ValueError):
    """A frame or stream that cannot be decoded (truncated, unknown kind, bad header)."""


def now_micros() -> int:
    return time.time_ns() // 1000


def encode_frame(stream_id: int, seq_id: int, kind: int, payload: bytes = b"") -> bytes:
    header = FRAME_HEADER.pack(len(payload), stream_id, seq_id, kind, now_micros())
    return header + payload if payload else header


def encode_stream(stream_id: int, body: bytes, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """All frames of one stream: Open with the first chunk, Data for the rest, then empty End."""
    frames = [encode_frame(stream_id, 0, KIND_OPEN, body[:chunk_size])]
    seq = 1
    for start in range(chunk_size, len(body), chunk_size):
        frames.append(encode_frame(stream_id, seq, KIND_DATA, body[start : start + chunk_size]))
        seq += 1
    frames.append(encode_frame(stream_id, seq, KIND_END))
    return frames


@dataclass(frozen=True)
class RpcHeader:
    msg_type: int
    request_id: int
    method_id: int
    metadata: bytes


def encode_rpc(
    msg_type: int, request_id: int, method_id: int, metadata: bytes, payload: bytes = b""
) -> bytes:
    if len(metadata) > MAX_METADATA:
        raise ValueError(f"metadata of {len(metadata)} bytes exceeds {MAX_METADATA}")
    return RPC_HEADER.pack(msg_type, request_id, method_id, len(metadata)) + metadata + payload


def decode_rpc(body: bytes) -> tuple[RpcHeader, memoryview]:
    """Split a stream's bytes into its RPC header and payload; raises FrameError if short."""
    if len(body) < RPC_HEADER_SIZE:
        raise FrameError(f"RPC header truncated: {len(body)} of {RPC_HEADER_SIZE} bytes")
    msg_type, request_id, method_id, meta_len = RPC_HEADER.unpack_from(body)
    end = RPC_HEADER_SIZE + meta_len
    if end > len(body):
        raise FrameError(
            f"RPC metadata length {meta_len} exceeds the {len(body) - RPC_HEADER_SIZE} bytes sent"
        )
    view = memoryview(body)
    return RpcHeader(msg_type, request_id, method_id, bytes(view[RPC_HEADER_SIZE:end])), view[end:]


@dataclass
class StreamAssembler:
    """Reassembles streams from frames arriving in any number of WebSocket messages.

    `feed(message)` returns the (stream_id, bytes) of every stream that ended in it, plus the
    frames that are not stream data (Ping/Pong/Cancel) so the caller can answer them. A stream is
    capped at `max_stream_bytes` so a lying peer cannot grow memory without bound.
    """

    max_stream_bytes: int = 256 * 1024 * 1024
    open_streams: dict[int, list[bytes]] = field(default_factory=dict)
    open_sizes: dict[int, int] = field(default_factory=dict)
    partial: bytes = b""
    problems: list[str] = field(default_factory=list)  # frames dropped, for the caller to log
    # Streams cut off for exceeding the cap: (stream id, first bytes) so the caller can answer.
    overflowed: list[tuple[int, bytes]] = field(default_factory=list)
    discarded: set[int] = field(default_factory=set)

    def feed(self, message: bytes) -> tuple[list[tuple[int, bytes]], list[tuple[int, int, bytes]]]:
        data = self.partial + message if self.partial else message
        done: list[tuple[int, bytes]] = []
        control: list[tuple[int, int, bytes]] = []
        pos = 0
        view = memoryview(data)
        while len(data) - pos >= FRAME_HEADER_SIZE:
            length, stream_id, _seq, kind, _ts = FRAME_HEADER.unpack_from(data, pos)
            end = pos + FRAME_HEADER_SIZE + length
            if end > len(data):
                break
            payload = bytes(view[pos + FRAME_HEADER_SIZE : end])
            pos = end
            self._frame(stream_id, kind, payload, done, control)
        self.partial = bytes(view[pos:])
        if len(self.partial) > self.max_stream_bytes + FRAME_HEADER_SIZE:
            raise FrameError(f"frame of {len(self.partial)} bytes exceeds the limit")
        return done, control

    def _frame(self, stream_id: int, kind: int, payload: bytes, done: list, control: list) -> None:
        if kind == KIND_OPEN:
            self.open_streams[stream_id] = [payload]
            self.open_sizes[stream_id] = len(payload)
        elif kind in (KIND_DATA, KIND_END):
            if stream_id in self.discarded:  # the rest of a stream already refused
                if kind == KIND_END:
                    self.discarded.discard(stream_id)
                return
            if stream_id not in self.open_streams:
                name = "Data" if kind == KIND_DATA else "End"
                self.problems.append(f"{name} frame for stream {stream_id} that was never opened")
                return
            self.open_streams[stream_id].append(payload)
            self.open_sizes[stream_id] += len(payload)
            if kind == KIND_END:
                del self.open_sizes[stream_id]
                done.append((stream_id, b"".join(self.open_streams.pop(stream_id))))
        elif kind == KIND_CANCEL:
            self.open_streams.pop(stream_id, None)
            self.open_sizes.pop(stream_id, None)
            control.append((stream_id, kind, payload))
        elif kind in (KIND_PING, KIND_PONG):
            control.append((stream_id, kind, payload))
        else:
            self.problems.append(f"unknown frame kind {kind} on stream {stream_id}")
            return
        if self.open_sizes.get(stream_id, 0) > self.max_stream_bytes:
            head = self.open_streams.pop(stream_id)[0][:RPC_HEADER_SIZE]
            del self.open_sizes[stream_id]
            self.discarded.add(stream_id)
            self.overflowed.append((stream_id, head))

    def pending_bytes(self) -> int:
        return len(self.partial) + sum(self.open_sizes.values())
