"""A simd-r-drive compatible WebSocket server over the embedded `DataStore`.

Speaks what `simd-r-drive-ws-server` speaks (muxio frames, bitcode arguments, path ``/ws``) so
the official Python client `simd_r_drive_ws_client` and our `DataStoreWsClient` both work.

Behaviour worth knowing:

* One asyncio thread; the WebSocket layer is a small asyncio.Protocol (HTTP upgrade, frames,
  ping/pong/close) because a WebSocket library's per-message task switching cost more than the
  store calls. Small calls are answered inline (microseconds); a call whose stream exceeds
  `EXECUTOR_THRESHOLD` bytes runs in a worker thread under the store lock while this
  connection's reading is paused, so pings and other clients keep flowing and each client's
  calls stay in order. A client that stops reading our answers only stops its own calls
  (write-buffer flow control at 4 MiB).
* Limits: one WebSocket message and one reassembled call are capped at `MAX_MESSAGE_SIZE`
  (256 MiB by default, `--max-message-mib`). A bigger WebSocket message closes that connection
  with 1009; a call spread over many smaller frames that grows past the cap is answered with
  status Fail and the rest of it is dropped.
* Like the reference (muxio's tokio server) the server sends a WebSocket ping every 5 s
  (`--ping-interval`); it does not drop a client that is slow to answer, because synchronous
  clients only read when called.
* Bad input never stops the server: an RPC whose header can be read gets an error response
  (status Fail for undecodable arguments, MethodNotFound for unknown ids, SystemError for an
  unexpected store failure, or any failure in the worker thread, so no call is ever left
  unanswered) with the reason as UTF-8 text; unusable frames are logged and dropped.
* Frame parsing and encoding (RFC 6455) are shared with our client in `store/websocket.py`.
  Replies are written only from the event-loop thread, also for calls run in a worker thread. Store writes are atomic per call, so a client vanishing mid-call leaves no partial
  batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from narrative_pipeline.store import muxio, rpc, websocket
from narrative_pipeline.store.bitcode import BitcodeError
from narrative_pipeline.store.errors import ReadOnlyStoreError, StoreLockedError
from narrative_pipeline.store.muxio import FrameError

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 256 * 1024 * 1024
EXECUTOR_THRESHOLD = 256 * 1024  # messages above this are handled off the event loop
PING_INTERVAL_S = 5.0
RESPONSE_MESSAGE_BYTES = 1024 * 1024  # response frames are grouped into messages of about this size
WS_PATH = "/ws"
WRITE_BUFFER_HIGH = 4 * 1024 * 1024  # stop reading a client's calls while it owes us this much
MAX_HANDSHAKE = 16 * 1024
OP_CONT, OP_TEXT, OP_BINARY = websocket.OP_CONT, websocket.OP_TEXT, websocket.OP_BINARY
OP_CLOSE, OP_PING, OP_PONG = websocket.OP_CLOSE, websocket.OP_PING, websocket.OP_PONG


class CallError(Exception):
    """An RPC that must be answered with an error status instead of a result."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def execute(store: Any, method: str, args: tuple) -> object:
    """Run one RPC method on the store; returns the value the response struct carries."""
    if method == "write":
        key, payload = args
        return _tail_offset(store, store.write(key, payload))
    if method == "batch_write":
        return _tail_offset(store, store.batch_write(args[0]))
    if method == "delete":
        return _tail_offset(store, store.delete(args[0]))
    if method == "read":
        return store.read(args[0])
    if method == "batch_read":
        return store.batch_read(args[0])
    if method == "exists":
        return store.exists(args[0])
    if method == "len":
        return len(store)
    if method == "is_empty":
        return store.is_empty()
    if method == "file_size":
        return store.file_size()
    raise CallError(muxio.STATUS_METHOD_NOT_FOUND, f"method {method!r} not implemented")


def _tail_offset(store: Any, returned: object) -> int:
    """simd-r-drive answers writes with the new tail offset; use the engine's, else the size."""
    return returned if isinstance(returned, int) else store.file_size()


def decode_call(body: bytes) -> tuple[muxio.RpcHeader, str, tuple]:
    """Header, method name and decoded arguments of a call stream.

    Raises FrameError when even the header is unusable, CallError when it is usable but the
    call is not (the caller can then answer with the request id).
    """
    header, payload = muxio.decode_rpc(body)
    if header.msg_type != muxio.MSG_CALL:
        raise CallError(muxio.STATUS_FAIL, f"expected a Call message, got type {header.msg_type}")
    method = rpc.METHOD_NAMES.get(header.method_id)
    if method is None:
        raise CallError(
            muxio.STATUS_METHOD_NOT_FOUND, f"unknown method id {header.method_id:#018x}"
        )
    args_bytes = payload if len(payload) else header.metadata
    try:
        return header, method, rpc.decode_request(method, args_bytes)
    except (BitcodeError, ValueError) as exc:
        raise CallError(muxio.STATUS_FAIL, f"malformed {method} request: {exc}") from exc


def encode_reply(request_id: int, method_id: int, status: int, payload: bytes) -> bytes:
    return muxio.encode_rpc(muxio.MSG_RESPONSE, request_id, method_id, bytes((status,)), payload)


class StoreServer:
    """Serves one DataStore to any number of WebSocket clients (asyncio, one thread)."""

    def __init__(
        self,
        store: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        ping_interval: float | None = PING_INTERVAL_S,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        self.ping_interval = ping_interval
        self.connections: set[WsConnection] = set()
        self.store_lock: asyncio.Lock | None = None
        self._server: asyncio.Server | None = None
        self._pinger: asyncio.Task | None = None
        self.calls_served = 0
        self.errors_answered = 0

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the (host, port) actually bound."""
        loop = asyncio.get_running_loop()
        self.store_lock = asyncio.Lock()
        self._server = await loop.create_server(
            lambda: WsConnection(self), self.host, self.port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if self.ping_interval:
            self._pinger = asyncio.create_task(self._ping_forever(self.ping_interval))
        log.info("serving %s", self.url)
        return self.host, self.port

    async def _ping_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for connection in list(self.connections):
                connection.send_ping()

    async def close(self) -> None:
        """Stop accepting, say goodbye (1001) to every client, and wait for the running call."""
        if self._pinger:
            self._pinger.cancel()
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.close_ws(1001, "server shutting down")
            await self._server.wait_closed()
        if self.store_lock is not None:
            async with self.store_lock:  # a call running in a worker thread finishes first
                pass

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    # ------------------------------------------------------------------ calls

    def call(self, peer: str, body: bytes) -> bytes | None:
        """The response stream for one call stream (None when it cannot be answered at all)."""
        try:
            header, method, args = decode_call(body)
        except FrameError as exc:
            if len(body) >= muxio.RPC_HEADER_SIZE and body[0] == muxio.MSG_CALL:
                request_id, method_id = _ids_of(body)  # header readable: answer the caller
                return self.error_reply(peer, request_id, method_id, muxio.STATUS_FAIL, str(exc))
            log.warning("client %s sent an unusable call: %s", peer, exc)
            return None
        except CallError as exc:
            request_id, method_id = _ids_of(body)
            return self.error_reply(peer, request_id, method_id, exc.status, str(exc))
        try:
            payload = rpc.encode_response(method, execute(self.store, method, args))
        except CallError as exc:
            return self.error_reply(peer, header.request_id, header.method_id, exc.status, str(exc))
        except (ValueError, TypeError, KeyError, ReadOnlyStoreError, StoreLockedError) as exc:
            text = f"{method} failed: {exc}"
            return self.error_reply(
                peer, header.request_id, header.method_id, muxio.STATUS_FAIL, text
            )
        except Exception as exc:  # the store itself broke: report, keep serving others
            log.exception("store failure in %s from client %s", method, peer)
            text = f"{method} failed: {type(exc).__name__}: {exc}"
            return self.error_reply(
                peer, header.request_id, header.method_id, muxio.STATUS_SYSTEM_ERROR, text
            )
        self.calls_served += 1
        return encode_reply(header.request_id, header.method_id, muxio.STATUS_SUCCESS, payload)

    async def call_in_thread(self, peer: str, body: bytes) -> bytes | None:
        """`call` for big messages: in a worker thread, holding the store lock meanwhile."""
        assert self.store_lock is not None
        async with self.store_lock:
            return await asyncio.get_running_loop().run_in_executor(None, self.call, peer, body)

    def can_call_inline(self, body: bytes) -> bool:
        assert self.store_lock is not None
        return len(body) <= EXECUTOR_THRESHOLD and not self.store_lock.locked()

    def error_reply(
        self, peer: str, request_id: int, method_id: int, status: int, text: str
    ) -> bytes:
        log.warning(
            "client %s: answering request %d with status %d: %s", peer, request_id, status, text
        )
        self.errors_answered += 1
        return encode_reply(request_id, method_id, status, text.encode("utf-8", "replace"))


class WsConnection(asyncio.Protocol):
    """One client: HTTP upgrade, WebSocket frames, muxio streams, calls answered in order.

    Written on asyncio.Protocol rather than a WebSocket library because per-message task
    switching cost more than the store calls themselves. Small calls are answered inside
    `data_received`; a big call (or one arriving while another client's big call holds the store)
    pauses reading on this connection until its task is done, so calls stay in order. When the
    client stops reading our answers, we stop reading its calls (write-buffer flow control).
    """

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
        self.assembler = muxio.StreamAssembler(max_stream_bytes=server.max_message_size)
        self.next_stream = 0
        self.task: asyncio.Future | None = None
        self.backlog: deque[bytes] = deque()
        self.write_paused = False
        self.quick_ack: Callable[[], None] = lambda: None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.quick_ack = _quick_ack_setter(transport.get_extra_info("socket"))
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.upgraded:
            pending = self.assembler.pending_bytes() + sum(map(len, self.backlog))
            if pending:
                log.warning(
                    "client %s left %d bytes of unfinished calls; none of them was applied",
                    self.peer,
                    pending,
                )
            log.info("client %s disconnected%s", self.peer, f" ({exc})" if exc else "")

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
            return
        self.buf += data
        if self.task is None:
            self._process()

    # ------------------------------------------------------------------ bytes in

    def _process(self) -> None:
        if not self.upgraded and not self._handshake():
            return
        parse_frame, max_size = websocket.parse_frame, self.server.max_message_size
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
            if len(self.buf) > MAX_HANDSHAKE:
                self._http_error(431, "Request Header Fields Too Large", "request head too large")
            return False
        head = bytes(self.buf[:end]).decode("latin-1")
        self.pos = end + 4
        lines = head.split("\r\n")
        request_line = lines[0].split()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(request_line) != 3 or request_line[0] != "GET":
            self._http_error(
                400, "Bad Request", f"expected a GET upgrade request, got {lines[0][:80]!r}"
            )
            return False
        if request_line[1].split("?", 1)[0] != WS_PATH:
            self._http_error(404, "Not Found", f"not found: the store is served at {WS_PATH}")
            return False
        key = headers.get("sec-websocket-key")
        if "websocket" not in headers.get("upgrade", "").lower() or not key:
            self._http_error(426, "Upgrade Required", "this endpoint speaks WebSocket only")
            return False
        accept = websocket.accept_key(key.encode())
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded = True
        log.info("client %s connected", self.peer)
        return True

    def _http_error(self, status: int, reason: str, text: str) -> None:
        log.warning("client %s: HTTP %d: %s", self.peer, status, text)
        body = (text + "\n").encode()
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        assert self.transport is not None
        self.transport.write(head.encode() + body)
        self.transport.close()
        self.closing = True

    def _refuse_frame(self, error: websocket.ProtocolError) -> None:
        if error.code == 1009:
            limit = self.server.max_message_size
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
            log.warning("client %s sent a text message; muxio uses binary, ignored", self.peer)
            return
        try:
            streams, control = self.assembler.feed(message)
        except FrameError as exc:
            log.warning("client %s sent bad frames: %s", self.peer, exc)
            self.assembler.open_streams.clear()
            self.assembler.open_sizes.clear()
            streams, control = [], []
        self._report_stream_problems()
        for stream_id, kind, _payload in control:
            log.debug(
                "client %s sent control frame kind %d on stream %d", self.peer, kind, stream_id
            )
        for _stream_id, body in streams:
            if self.task is not None:
                self.backlog.append(body)
            elif self.server.can_call_inline(body):
                self._send_reply(self.server.call(self.peer, body))
            else:
                assert self.transport is not None
                self.transport.pause_reading()
                self.task = asyncio.ensure_future(self._call_in_thread(body))

    def _report_stream_problems(self) -> None:
        assembler = self.assembler
        for _stream_id, head in assembler.overflowed:
            text = f"call exceeds the server's limit of {self.server.max_message_size} bytes (--max-message-mib)"
            self._answer_from_head(head, text)
        assembler.overflowed.clear()
        for problem in assembler.problems:
            log.warning("client %s: %s; frame dropped", self.peer, problem)
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
            log.warning("client %s: %s; dropped", self.peer, text)

    async def _call_in_thread(self, body: bytes) -> None:
        next_body: bytes | None = body
        try:
            while next_body is not None and not self.closing:
                self._send_reply(await self._answer_in_thread(next_body))
                next_body = self.backlog.popleft() if self.backlog else None
        finally:
            self.task = None
            if not self.closing and self.transport is not None:
                if not self.write_paused:
                    self.transport.resume_reading()
                self._process()

    async def _answer_in_thread(self, body: bytes) -> bytes | None:
        """The reply to one call; a bug costs that call an error answer, never its answer.

        (Before, an unexpected exception here left the call and the calls queued behind it
        unanswered: the client waited for its timeout while the server sat idle.)
        """
        try:
            return await self.server.call_in_thread(self.peer, body)
        except Exception as exc:
            log.exception("client %s: call failed", self.peer)
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
        self.transport.close()

    def fail(self, code: int, reason: str) -> None:
        log.warning("client %s: closing with %d: %s", self.peer, code, reason)
        self.close_ws(code, reason)


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


def run_server(
    store: Any,
    host: str,
    port: int,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    ping_interval: float | None = PING_INTERVAL_S,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until interrupted (or until `stop` is set); `on_ready` gets the ws:// URL."""

    async def main() -> None:
        server = StoreServer(
            store, host, port, max_message_size=max_message_size, ping_interval=ping_interval
        )
        await server.start()
        stopping = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopping.set)  # finish the current call, then close
        if on_ready:
            on_ready(server.url)
        try:
            while not stopping.is_set() and not (stop is not None and stop.is_set()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 0.2)
        finally:
            await server.close()
            log.info(
                "server stopped after %d calls (%d answered with errors)",
                server.calls_served,
                server.errors_answered,
            )

    asyncio.run(main())


def add_serve_command(subparsers: Any) -> None:
    """Register `store serve PATH --host --port` (mirrors `simd-r-drive-ws-server`)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a store file over WebSocket (simd-r-drive protocol, path /ws)",
        description="Serve a simd-r-drive store file to the official client and ours.",
    )
    parser.add_argument("path", help="store file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--fsync", action="store_true", help="fsync every write batch before answering"
    )
    parser.add_argument(
        "--max-message-mib",
        type=int,
        default=MAX_MESSAGE_SIZE // (1024 * 1024),
        help="largest accepted WebSocket message / call in MiB (default 256)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=PING_INTERVAL_S,
        help="seconds between WebSocket pings to each client, 0 = none (default 5, as the reference)",
    )
    parser.set_defaults(func=serve_command)


def serve_command(args: Any) -> int:
    from narrative_pipeline.store.datastore import DataStore

    store = DataStore(args.path, fsync=args.fsync)

    def announce(url: str) -> None:
        print(f"listening on {url}", flush=True)

    try:
        run_server(
            store,
            args.host,
            args.port,
            max_message_size=args.max_message_mib * 1024 * 1024,
            ping_interval=args.ping_interval or None,
            on_ready=announce,
        )
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m narrative_pipeline.store.server PATH ...`: the `store serve` command alone.

    Same arguments and code as `narrative-pipeline store serve`, without importing the other
    command groups (the full CLI pulls in torch/lightning, which costs seconds per start).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m narrative_pipeline.store.server")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve_command(args)


if __name__ == "__main__":
    sys.exit(main())
