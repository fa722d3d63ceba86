"""`DataStoreWsClient`: a synchronous simd-r-drive WebSocket client, API-equal to the official one.

Why our own: the official client (`simd_r_drive_ws_client`) runs a tokio runtime in a background
thread; every call crosses threads. This one speaks WebSocket over a plain blocking socket in the
calling thread, which is what synchronous callers (DataLoader workers, notebooks) want, and it
needs no compiled wheel. Requests are byte-for-byte what the official client sends (see the
golden requests in the tests), so it works against the Rust `simd-r-drive-ws-server` too.

Process safety: the connection belongs to the process that opened it. After a fork (DataLoader
workers) or unpickling, the next call opens a fresh connection, so workers never share a socket.
Idle connections the server closed are reopened transparently before the next call.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

from narrative_pipeline.store import muxio, rpc, websocket

__all__ = ["DataStoreWsClient"]

_OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = (
    websocket.OP_BINARY,
    websocket.OP_CLOSE,
    websocket.OP_PING,
    websocket.OP_PONG,
)
_RECV_CHUNK = 1 << 20
_BATCH_METHODS = ("batch_write", "batch_read")
_READ_ONLY = ("read", "batch_read", "exists", "len", "is_empty", "file_size")
_STATUS_NAMES = {1: "Fail", 2: "SystemError", 3: "MethodNotFound"}
# Responses are not capped: a batch_read answer may legitimately exceed the server's 256 MiB
# call limit. (With muxio's default cap such a response was silently dropped and the call
# waited for its timeout with the server idle: a lost response.)
_MAX_RESPONSE_BYTES = sys.maxsize


class _Connection:
    """One WebSocket connection over a blocking socket, plus muxio stream bookkeeping."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.address = f"ws://{host}:{port}/ws"
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.assembler = muxio.StreamAssembler(max_stream_bytes=_MAX_RESPONSE_BYTES)
        self.fragments: list[bytes] = []
        self.deadline: float | None = None
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.calls = 0
        self._handshake(host, port)

    def _handshake(self, host: str, port: int) -> None:
        key = websocket.new_key()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("latin-1")
        self.pos = end
        status_line = head.split("\r\n", 1)[0]
        if " 101 " not in status_line + " ":
            raise ConnectionError(f"{self.address} refused the WebSocket upgrade: {status_line}")
        accept = websocket.accept_key(key).decode()
        if f"sec-websocket-accept: {accept}".lower() not in head.lower():
            raise ConnectionError(f"{self.address} sent a bad Sec-WebSocket-Accept")

    # ------------------------------------------------------------------ bytes in

    def _fill(self) -> None:
        if self.pos == len(self.buf):
            self.buf.clear()
            self.pos = 0
        elif self.pos > _RECV_CHUNK and self.pos * 2 > len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0
        if self.deadline is not None:  # pings must not stretch a call past its timeout
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed")
            current = self.sock.gettimeout()
            if current is None or remaining < current:
                self.sock.settimeout(remaining)
        chunk = self.sock.recv(_RECV_CHUNK)
        if not chunk:
            raise ConnectionError(f"{self.address} closed the connection")
        self.buf += chunk

    def _handle_control(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING:
            self.send_frame(_OP_PONG, payload)
        elif opcode == _OP_CLOSE:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            with contextlib.suppress(OSError):
                self.send_frame(_OP_CLOSE, payload[:2])
            reason = payload[2:].decode("utf-8", "replace")
            raise ConnectionError(f"{self.address} closed the connection (code {code} {reason})")

    def read_message(self) -> bytes:
        """The next data message (blocking); answers pings, raises ConnectionError on close."""
        parse_frame = websocket.parse_frame
        while True:
            frame = parse_frame(self.buf, self.pos)
            if frame is None:
                self._fill()
                continue
            fin, opcode, payload, self.pos = frame
            if opcode >= _OP_CLOSE:
                self._handle_control(opcode, payload)
                continue
            self.fragments.append(payload)
            if fin:
                parts, self.fragments = self.fragments, []
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def drain_idle(self) -> None:
        """Between calls: answer pings and notice a close that arrived while we were idle."""
        while self.poller.poll(0):  # one syscall when nothing arrived, the usual case
            chunk = self.sock.recv(_RECV_CHUNK)
            if not chunk:
                raise ConnectionError(f"{self.address} closed the idle connection")
            self.buf += chunk
        while (frame := websocket.parse_frame(self.buf, self.pos)) is not None:
            fin, opcode, payload, self.pos = frame
            if opcode >= _OP_CLOSE:
                self._handle_control(opcode, payload)
            else:  # unsolicited data: keep the stream state consistent
                self.fragments.append(payload)
                if fin:
                    self.assembler.feed(b"".join(self.fragments))
                    self.fragments = []

    # ------------------------------------------------------------------ bytes out

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(websocket.encode_frame(opcode, payload, mask=True))

    def send_messages(self, messages: list[bytes]) -> None:
        encode = websocket.encode_frame
        self.sock.sendall(b"".join([encode(_OP_BINARY, m, mask=True) for m in messages]))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class DataStoreWsClient:
    """Synchronous client for a simd-r-drive WebSocket server (ours or the Rust one).

    Same methods as `simd_r_drive_ws_client.DataStoreWsClient`. `timeout` bounds single-key
    calls and `batch_timeout` batch calls, in seconds; a call that runs past it raises
    `TimeoutError` and the connection is reopened on the next call.
    """

    def __init__(
        self, host: str, port: int, timeout: float = 30.0, batch_timeout: float = 60.0
    ) -> None:
        self.host = host
        self.port = int(port)
        self.timeout = timeout
        self.batch_timeout = batch_timeout
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._pid = os.getpid()
        with self._lock:
            self._connection()  # fail fast, like the official client, when nothing listens

    @property
    def address(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def __repr__(self) -> str:
        return f"DataStoreWsClient({self.address})"

    def __getstate__(self) -> dict[str, Any]:
        # Sockets do not travel between processes; the receiver reconnects on first use.
        return {
            "host": self.host,
            "port": self.port,
            "timeout": self.timeout,
            "batch_timeout": self.batch_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._conn = None
        self._pid = os.getpid()

    # ------------------------------------------------------------------ public API

    def write(self, key: bytes, data: bytes) -> None:
        self._call("write", _as_bytes(key, "key"), _as_bytes(data, "data"))

    def batch_write(self, items: list[tuple[bytes, bytes]]) -> None:
        entries = items if isinstance(items, list) else list(items)
        keys = [k for k, _ in entries]
        values = [v for _, v in entries]
        if set(map(type, keys)) - {bytes} or set(map(type, values)) - {bytes}:  # rare: convert
            entries = [(_as_bytes(k, "key"), _as_bytes(v, "value")) for k, v in entries]
        self._call("batch_write", entries)

    def read(self, key: bytes) -> bytes | None:
        return self._call("read", _as_bytes(key, "key"))  # type: ignore[return-value]

    def batch_read(self, keys: list[bytes]) -> list[bytes | None]:
        keys = keys if isinstance(keys, list) else list(keys)
        if set(map(type, keys)) - {bytes}:  # checked in C; converting is the rare path
            keys = [_as_bytes(k, "key") for k in keys]
        return self._call("batch_read", keys)  # type: ignore[return-value]

    def batch_read_structured(
        self, data: dict[Any, bytes] | list[dict[Any, bytes]]
    ) -> dict[Any, bytes | None] | list[dict[Any, bytes | None]]:
        """Read every value of a dict (or list of dicts) in one batch; same shape back."""
        dicts = [data] if isinstance(data, dict) else data
        single = isinstance(data, dict)
        for d in dicts:
            if not isinstance(d, dict):
                raise TypeError("All items in the list must be dictionaries.")
        values = iter(self.batch_read([key for d in dicts for key in d.values()]))
        rebuilt = [{name: next(values) for name in d} for d in dicts]
        return rebuilt[0] if single else rebuilt

    def delete(self, key: bytes) -> None:
        self._call("delete", _as_bytes(key, "key"))

    def exists(self, key: bytes) -> bool:
        return self._call("exists", _as_bytes(key, "key"))  # type: ignore[return-value]

    def __contains__(self, key: bytes) -> bool:
        return self.exists(key)

    def __len__(self) -> int:
        return self._call("len")  # type: ignore[return-value]

    def is_empty(self) -> bool:
        return self._call("is_empty")  # type: ignore[return-value]

    def file_size(self) -> int:
        return self._call("file_size")  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> DataStoreWsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def _connection(self) -> _Connection:
        if self._pid != os.getpid():  # forked: the inherited socket belongs to the parent
            self._conn = None
            self._pid = os.getpid()
        if self._conn is None:
            try:
                self._conn = _Connection(self.host, self.port, self.timeout)
            except TimeoutError as exc:
                raise TimeoutError(
                    f"connecting to {self.address} timed out after {self.timeout}s"
                ) from exc
            except OSError as exc:
                raise ConnectionError(
                    f"cannot connect to simd-r-drive server at {self.address}: {exc}"
                ) from exc
        return self._conn

    def _call(self, method: str, *args: Any) -> object:
        args_bytes = rpc.encode_request(method, *args)
        timeout = self.batch_timeout if method in _BATCH_METHODS else self.timeout
        if self._pid != os.getpid():  # forked: a lock held by a parent thread would never free
            self._lock = threading.Lock()
        with self._lock:
            conn = self._ready_connection()
            try:
                return self._roundtrip(conn, method, args_bytes, timeout)
            except _Retryable:  # the server had closed this connection: one fresh try
                self._drop()
            try:
                return self._roundtrip(self._ready_connection(), method, args_bytes, timeout)
            except _Retryable as exc:
                raise ConnectionError(str(exc)) from exc.__cause__

    def _ready_connection(self) -> _Connection:
        conn = self._connection()
        try:
            conn.drain_idle()
        except OSError:  # the server dropped us while idle (ConnectionError is an OSError)
            self._drop()
            conn = self._connection()
        return conn

    def _roundtrip(
        self, conn: _Connection, method: str, args_bytes: bytes, timeout: float
    ) -> object:
        method_id = rpc.METHOD_IDS[method]
        stream_id, request_id = _call_ids(conn.calls)
        conn.calls += 1
        if len(args_bytes) <= muxio.MAX_METADATA:
            body = muxio.encode_rpc(muxio.MSG_CALL, request_id, method_id, args_bytes)
        else:
            body = muxio.encode_rpc(muxio.MSG_CALL, request_id, method_id, b"", args_bytes)
        sent = False
        try:
            if conn.sock.gettimeout() != timeout:
                conn.sock.settimeout(timeout)
            conn.deadline = time.monotonic() + timeout
            conn.send_messages(muxio.encode_stream(stream_id, body))
            sent = True
            reply = self._await_reply(conn, request_id)
        except TimeoutError as exc:
            self._drop()
            raise TimeoutError(f"{self.address} did not answer {method} within {timeout}s") from exc
        except _ResponseTooLarge as exc:  # the rest of it is still coming: this socket is done
            self._drop()
            raise OSError(
                f"{self.address} answered {method} with more than {exc.args[0]} bytes"
            ) from None
        except OSError as exc:
            self._drop()
            if not sent or method in _READ_ONLY:
                raise _Retryable(
                    f"connection to {self.address} lost during {method}: {exc}"
                ) from exc
            raise ConnectionError(
                f"connection to {self.address} lost during {method}: {exc}"
            ) from exc
        header, payload = muxio.decode_rpc(reply)
        status = header.metadata[0] if header.metadata else muxio.STATUS_SUCCESS
        if status != muxio.STATUS_SUCCESS:
            text = bytes(payload).decode("utf-8", "replace")
            name = _STATUS_NAMES.get(status, f"status {status}")
            raise OSError(f"{self.address} answered {method} with {name}: {text}")
        return rpc.decode_response(method, payload)

    def _await_reply(self, conn: _Connection, request_id: int) -> bytes:
        while True:
            streams, _control = conn.assembler.feed(conn.read_message())
            if conn.assembler.overflowed:
                raise _ResponseTooLarge(conn.assembler.max_stream_bytes)
            for _stream_id, body in streams:
                if (
                    len(body) >= 5
                    and body[0] == muxio.MSG_RESPONSE
                    and int.from_bytes(body[1:5], "little") == request_id
                ):
                    return body

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def _call_ids(n: int) -> tuple[int, int]:
    """(stream id, request id) of a connection's n-th call, as the official client numbers them.

    Observed from simd-r-drive-ws-client 0.11.1a0: (0, 1), (3, 2), (5, 4), (7, 6), ...
    """
    if n == 0:
        return 0, 1
    return (2 * n + 1) & 0xFFFF_FFFF, (2 * n) & 0xFFFF_FFFF


class _ResponseTooLarge(Exception):
    """A response stream grew past the assembler's cap (args[0]); never silently dropped."""


class _Retryable(ConnectionError):
    """The connection failed before the server can have applied the call."""


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
