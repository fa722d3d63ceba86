"""One client connection of the store server: bytes in, frames, calls, replies, and its limits.

Written on asyncio.Protocol rather than a WebSocket library because per-message task switching
cost more than the store calls themselves (benchmarks/RESULTS.md, "Why our own framing"). Small
calls are answered inside `data_received`; a big call (or one arriving while another client's big
call holds the store) pauses reading on this connection until its task is done, so calls stay in
order. When the client stops reading our answers, we stop reading its calls (write-buffer flow
control at 4 MiB).

Limits enforced here (store/limits.py holds the values, docs/SECURITY.md the table): the bytes
of unfinished input this connection holds (`pending_cap`) and its share of the server's memory
budget are re-counted after every read, and a connection over either is closed (1009 / 1013)
before it can hold more; control frames over 125 bytes are refused from their header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from narrative_pipeline.store import handshake, muxio, websocket
from narrative_pipeline.store.muxio import FrameError

if TYPE_CHECKING:
    from narrative_pipeline.store.server import StoreServer

RESPONSE_MESSAGE_BYTES = 1024 * 1024  # response frames are grouped into messages of about this size
WRITE_BUFFER_HIGH = 4 * 1024 * 1024  # stop reading a client's calls while it owes us this much
# After our close frame, how long we keep reading (and discarding) what the client still sends
# before closing the socket. Closing a socket with unread input makes the kernel send a reset,
# which can destroy the close frame (and its code, e.g. 1009) before the client reads it.
# Bounded in time and in bytes, so a client cannot make us read for long: past either, a reset.
CLOSE_LINGER_SECONDS = 2.0
CLOSE_LINGER_BYTES = 4 * 1024 * 1024
OP_CONT, OP_TEXT, OP_BINARY = websocket.OP_CONT, websocket.OP_TEXT, websocket.OP_BINARY
OP_CLOSE, OP_PING, OP_PONG = websocket.OP_CLOSE, websocket.OP_PING, websocket.OP_PONG


class WsConnection(asyncio.Protocol):
    """One client: HTTP upgrade, WebSocket frames, muxio streams, calls answered in order."""

    def __init__(self, server: StoreServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buf = bytearray()
        self.pos = 0
        self.upgraded = False
        self.closing = False
        self.fragments: list[bytes] = []
        self.fragments_size = 0
        self.fragments_text = False
        self.assembler = muxio.StreamAssembler(max_stream_bytes=server.limits.max_message_size)
        self.next_stream = 0
        self.task: asyncio.Future | None = None
        self.backlog: deque[bytes] = deque()
        self.write_paused = False
        self.quick_ack: Callable[[], None] = lambda: None
        self.opened_at = self.last_read = time.monotonic()
        self.held = 0  # bytes of client input this connection holds, as counted in the budget
        self.backlog_bytes = 0
        self.lingered = 0  # bytes discarded after our close frame (CLOSE_LINGER_BYTES)

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        if address and not self.server.limits.peer_allowed(address[0]):
            self.server.quiet.warning("refused", "refused %s: not in --allow-from", self.peer)
            self.closing = True
            transport.abort()
            return
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.quick_ack = _quick_ack_setter(transport.get_extra_info("socket"))
        self.server.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.upgraded:
            pending = self.assembler.pending_bytes() + self.backlog_bytes
            if pending:
                self.server.quiet.warning(
                    "unfinished",
                    "client %s left %d bytes of unfinished calls; none of them was applied",
                    self.peer,
                    pending,
                )
            self.server.quiet.info(
                "disconnect", "client %s disconnected%s", self.peer, f" ({exc})" if exc else ""
            )
        self.buf, self.fragments, self.backlog = bytearray(), [], deque()
        self.assembler = muxio.StreamAssembler(max_stream_bytes=1)
        self.backlog_bytes = 0
        self.server.budget.change(-self.held)
        self.held = 0

    def pause_writing(self) -> None:
        self.write_paused = True
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.task is None and self.transport is not None and not self.closing:
            self.transport.resume_reading()
            self._process()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            self._discard_while_closing(len(data))
            return
        self.last_read = time.monotonic()
        self.buf += data
        if self.task is None:
            self._process()
        self._account()

    def _account(self) -> None:
        """Re-count what this connection holds; close it when over its cap or the budget."""
        held = len(self.buf) - self.pos + self.fragments_size + self.backlog_bytes
        if self.assembler.open_sizes or self.assembler.partial:
            held += self.assembler.pending_bytes()
        delta, self.held = held - self.held, held
        within_budget = self.server.budget.change(delta) if delta else True
        if self.closing or not delta:
            return
        if held > self.server.limits.pending_cap:
            cap = self.server.limits.pending_cap
            self.fail(1009, f"more than {cap} bytes of unfinished calls on one connection")
        elif not within_budget and delta > 0:
            self.fail(1013, "server memory budget for unfinished calls exhausted; retry later")

    # ------------------------------------------------------------------ bytes in

    def _process(self) -> None:
        if not self.upgraded and not self._handshake():
            return
        parse_frame, max_size = websocket.parse_frame, self.server.limits.max_message_size
        while not self.closing and self.task is None and not self.write_paused:
            try:
                frame = parse_frame(self.buf, self.pos, True, max_size - self.fragments_size)
            except websocket.ProtocolError as exc:
                self._refuse_frame(exc)
                break
            if frame is None:
                break
            fin, opcode, payload, self.pos = frame
            self._on_frame(fin, opcode, payload)
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        if self.assembler.open_streams and not self.closing:
            self.quick_ack()  # the official client holds the End frame until we ACK the Open

    def _handshake(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > handshake.MAX_HANDSHAKE:
                self._refuse(
                    handshake.Refusal(431, "Request Header Fields Too Large", "head too large")
                )
            return False
        self.pos = end + 4
        reply = handshake.answer(bytes(self.buf[:end]).decode("latin-1"), self.server.limits)
        if isinstance(reply, handshake.Refusal):
            self._refuse(reply)
            return False
        assert self.transport is not None
        self.transport.write(reply)
        self.upgraded = True
        self.server.quiet.info("connect", "client %s connected", self.peer)
        return True

    def _refuse(self, refusal: handshake.Refusal) -> None:
        self.server.quiet.warning(
            f"http-{refusal.status}",
            "client %s: HTTP %d: %s",
            self.peer,
            refusal.status,
            refusal.text,
        )
        assert self.transport is not None
        self.transport.write(refusal.response())
        self.transport.close()
        self.closing = True

    def _refuse_frame(self, error: websocket.ProtocolError) -> None:
        if error.code == 1009:
            limit = self.server.limits.max_message_size
            self.fail(1009, f"message of more than {limit} bytes (--max-message-mib)")
        else:
            self.fail(error.code, str(error))

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._write_frame(OP_PONG, payload)
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            self.close_ws(code if code in (1000, 1001) else 1000, "")
        elif opcode in (OP_TEXT, OP_BINARY) and not self.fragments:
            if fin:
                self._on_message(payload, opcode == OP_TEXT)
            else:
                self.fragments, self.fragments_size, self.fragments_text = (
                    [payload],
                    len(payload),
                    opcode == OP_TEXT,
                )
        elif opcode == OP_CONT and self.fragments:
            self.fragments.append(payload)
            self.fragments_size += len(payload)
            if fin:
                message, self.fragments, self.fragments_size = b"".join(self.fragments), [], 0
                self._on_message(message, self.fragments_text)
        else:
            self.fail(1002, f"protocol error: unexpected opcode {opcode}")

    def _on_message(self, message: bytes, text: bool) -> None:
        if text:
            self.server.quiet.warning(
                "text", "client %s sent a text message; muxio uses binary, ignored", self.peer
            )
            return
        try:
            streams, _control = self.assembler.feed(message)
        except FrameError as exc:
            self.server.quiet.warning("frames", "client %s sent bad frames: %s", self.peer, exc)
            self.assembler.open_streams.clear()
            self.assembler.open_sizes.clear()
            streams = []
        self._report_stream_problems()
        for _stream_id, body in streams:
            if self.task is not None:
                self.backlog.append(body)
                self.backlog_bytes += len(body)
            elif self.server.can_call_inline(body):
                self._send_reply(self.server.call(self.peer, body))
            else:
                assert self.transport is not None
                self.transport.pause_reading()
                self.task = asyncio.ensure_future(self._call_in_thread(body))

    def _report_stream_problems(self) -> None:
        assembler = self.assembler
        for _stream_id, head in assembler.overflowed:
            limit = self.server.limits.max_message_size
            text = f"call exceeds the server's limit of {limit} bytes (--max-message-mib)"
            self._answer_from_head(head, text)
        assembler.overflowed.clear()
        for problem in assembler.problems:
            self.server.quiet.warning("frames", "client %s: %s; frame dropped", self.peer, problem)
        assembler.problems.clear()
        truncated, assembler.partial = assembler.partial, b""
        if truncated:
            # A WebSocket message carries whole frames; one that runs past its message lied.
            declared = int.from_bytes(truncated[:4], "little") if len(truncated) >= 4 else -1
            held = max(len(truncated) - muxio.FRAME_HEADER_SIZE, 0)
            text = (
                f"truncated frame: header declares {declared} payload bytes, message holds {held}"
            )
            self._answer_from_head(truncated[muxio.FRAME_HEADER_SIZE :], text)

    def _answer_from_head(self, head: bytes, text: str) -> None:
        if len(head) >= muxio.RPC_HEADER_SIZE and head[0] == muxio.MSG_CALL:
            request_id, method_id = _ids_of(head)
            self._send_reply(
                self.server.error_reply(self.peer, request_id, method_id, muxio.STATUS_FAIL, text)
            )
        else:
            self.server.quiet.warning("frames", "client %s: %s; dropped", self.peer, text)

    async def _call_in_thread(self, body: bytes) -> None:
        next_body: bytes | None = body
        try:
            while next_body is not None and not self.closing:
                self._send_reply(await self._answer_in_thread(next_body))
                next_body = self.backlog.popleft() if self.backlog else None
                self.backlog_bytes -= len(next_body) if next_body is not None else 0
        finally:
            self.task = None
            if not self.closing and self.transport is not None:
                if not self.write_paused:
                    self.transport.resume_reading()
                self._process()
                self._account()

    async def _answer_in_thread(self, body: bytes) -> bytes | None:
        """The reply to one call; a bug costs that call an error answer, never its answer.

        (Before, an unexpected exception here left the call and the calls queued behind it
        unanswered: the client waited for its timeout while the server sat idle.)
        """
        try:
            return await self.server.call_in_thread(self.peer, body)
        except Exception as exc:
            self.server.quiet.log(
                logging.ERROR, "worker", "client %s: call failed: %r", self.peer, exc, exc_info=True
            )
            if len(body) < muxio.RPC_HEADER_SIZE or body[0] != muxio.MSG_CALL:
                return None
            request_id, method_id = _ids_of(body)
            text = f"server error: {type(exc).__name__}: {exc}"
            status = muxio.STATUS_SYSTEM_ERROR
            return self.server.error_reply(self.peer, request_id, method_id, status, text)

    # ------------------------------------------------------------------ bytes out

    def _send_reply(self, body: bytes | None) -> None:
        """Send one response stream; frames are grouped into messages of about 1 MiB."""
        if body is None or self.closing:
            return
        stream_id = self.next_stream
        self.next_stream = (stream_id + 1) & 0xFFFF_FFFF
        frames = muxio.encode_stream(stream_id, body)
        if len(body) <= RESPONSE_MESSAGE_BYTES:
            self._write_frame(OP_BINARY, b"".join(frames))
            return
        group: list[bytes] = []
        size = 0
        for frame in frames:
            group.append(frame)
            size += len(frame)
            if size >= RESPONSE_MESSAGE_BYTES:
                self._write_frame(OP_BINARY, b"".join(group))
                group, size = [], 0
        if group:
            self._write_frame(OP_BINARY, b"".join(group))

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        header = websocket.frame_header(opcode, len(payload))
        if len(payload) < 4096:
            self.transport.write(header + payload)
        else:
            self.transport.writelines((header, payload))

    def send_ping(self) -> None:
        if self.upgraded and not self.closing:
            self._write_frame(OP_PING, b"")

    def close_ws(self, code: int, reason: str) -> None:
        """Send a close frame and close the socket once what is queued has been written."""
        if self.closing or self.transport is None:
            return
        if self.upgraded:
            self._write_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode()[:120])
        self.closing = True
        self._linger_then_close(self.transport)

    def _discard_while_closing(self, size: int) -> None:
        self.lingered += size
        if self.lingered > CLOSE_LINGER_BYTES and self.transport is not None:
            self.transport.abort()

    def _linger_then_close(self, transport: asyncio.Transport) -> None:
        """Half-close (our close frame goes out, then FIN), discard the client's input until it
        closes too or CLOSE_LINGER_SECONDS pass, then close: no reset overtakes the close frame.
        The input read meanwhile is dropped unbuffered; past CLOSE_LINGER_BYTES of it, a reset."""
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        asyncio.get_running_loop().call_later(CLOSE_LINGER_SECONDS, transport.abort)

    def fail(self, code: int, reason: str) -> None:
        self.server.quiet.warning(
            f"close-{code}", "client %s: closing with %d: %s", self.peer, code, reason
        )
        self.close_ws(code, reason)

    def abort(self, why: str) -> None:
        """Drop the connection at once (frees its descriptor now): evicted or timed out."""
        self.server.quiet.warning(
            f"abort-{why.split()[0]}", "client %s: dropped: %s", self.peer, why
        )
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


def _ids_of(body: bytes) -> tuple[int, int]:
    """Request and method id from a call stream's first bytes (0 where missing)."""
    request_id = int.from_bytes(body[1:5], "little") if len(body) >= 5 else 0
    method_id = int.from_bytes(body[5:13], "little") if len(body) >= 13 else 0
    return request_id, method_id


def _quick_ack_setter(sock: socket.socket | None) -> Callable[[], None]:
    """A function that acknowledges received TCP data at once (Linux TCP_QUICKACK).

    The official client writes a call's Open and End frames as two small TCP writes without
    TCP_NODELAY, so Nagle holds the End frame until our ACK of the Open frame, which delayed
    ACK postpones by ~40 ms. Acknowledging at once while a call is half-received removes that
    stall (22k -> 600k keys/s for the official client's batch_read).
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or option is None:
        return lambda: None

    def quick_ack() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    return quick_ack
