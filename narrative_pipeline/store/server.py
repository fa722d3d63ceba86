"""A simd-r-drive compatible WebSocket server over the embedded `DataStore`.

Speaks what `simd-r-drive-ws-server` speaks (muxio frames, bitcode arguments, path ``/ws``) so
the official Python client `simd_r_drive_ws_client` and our `DataStoreWsClient` both work.

Behaviour worth knowing:

* Every connection has its own reader task; store calls are serialised by one asyncio lock.
  Small calls run inline (they take microseconds); calls whose message exceeds
  `EXECUTOR_THRESHOLD` bytes are decoded, executed and encoded in a worker thread so pings and
  other clients keep flowing. A client that stops reading only blocks its own task.
* Limits: a WebSocket message and a reassembled stream are capped at `MAX_MESSAGE_SIZE`
  (256 MiB by default, `--max-message-mib`); bigger messages close that connection with 1009.
* Like the reference (muxio's tokio server) the server sends a WebSocket ping every 5 s; it does
  not drop a client that is slow to answer, because synchronous clients only read when called.
* Bad input never stops the server: an RPC whose header can be read gets an error response
  (status Fail for undecodable arguments, MethodNotFound for unknown ids, SystemError for an
  unexpected store failure) with the reason as UTF-8 text; unusable frames are logged and
  dropped. Store writes are atomic per call, so a client vanishing mid-call leaves no partial
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
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from narrative_pipeline.store import muxio, rpc
from narrative_pipeline.store.bitcode import BitcodeError
from narrative_pipeline.store.errors import ReadOnlyStoreError, StoreLockedError
from narrative_pipeline.store.muxio import FrameError

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 256 * 1024 * 1024
EXECUTOR_THRESHOLD = 256 * 1024  # messages above this are handled off the event loop
PING_INTERVAL_S = 5.0
RESPONSE_MESSAGE_BYTES = 1024 * 1024  # response frames are grouped into messages of about this size
WS_PATH = "/ws"


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
    """Serves one DataStore to any number of WebSocket clients."""

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
        self._store_lock: asyncio.Lock | None = None
        self._server: Any = None
        self.calls_served = 0
        self.errors_answered = 0

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the (host, port) actually bound."""
        self._store_lock = asyncio.Lock()
        self._server = await serve(
            self._connection,
            self.host,
            self.port,
            process_request=_only_ws_path,
            max_size=self.max_message_size,
            max_queue=4,
            ping_interval=self.ping_interval,
            ping_timeout=None,
            compression=None,
            close_timeout=1.0,  # on shutdown, idle synchronous clients cannot answer the close
            write_limit=4 * 1024 * 1024,
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        return self.host, self.port

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    # ------------------------------------------------------------------ per connection

    async def _connection(self, ws: ServerConnection) -> None:
        peer = _peer(ws)
        log.info("client %s connected", peer)
        assembler = muxio.StreamAssembler(max_stream_bytes=self.max_message_size)
        next_stream = [0]
        quick_ack = _quick_ack_setter(ws)
        try:
            async for message in ws:
                if isinstance(message, str):
                    log.warning("client %s sent a text message; muxio uses binary, ignored", peer)
                    continue
                await self._message(ws, peer, assembler, next_stream, message)
                if assembler.open_streams:  # a call's End frame is still to come
                    quick_ack()
        except ConnectionClosed as exc:
            log.info("client %s closed the connection (%s)", peer, exc)
        finally:
            if assembler.pending_bytes():
                log.warning(
                    "client %s left %d bytes of unfinished calls; nothing of them was applied",
                    peer,
                    assembler.pending_bytes(),
                )
            log.info("client %s disconnected", peer)

    async def _message(
        self,
        ws: ServerConnection,
        peer: str,
        assembler: muxio.StreamAssembler,
        next_stream: list[int],
        message: bytes,
    ) -> None:
        try:
            streams, control = assembler.feed(message)
        except FrameError as exc:
            log.warning("client %s sent bad frames: %s", peer, exc)
            assembler.open_streams.clear()
            assembler.open_sizes.clear()
            streams, control = [], []
        for _stream_id, head in assembler.overflowed:
            text = f"call exceeds the server's limit of {self.max_message_size} bytes (--max-message-mib)"
            if len(head) >= muxio.RPC_HEADER_SIZE and head[0] == muxio.MSG_CALL:
                request_id, method_id = _ids_of(head)
                await self._send_stream(
                    ws,
                    next_stream,
                    self._error_reply(peer, request_id, method_id, muxio.STATUS_FAIL, text),
                )
            else:
                log.warning("client %s: %s; dropped", peer, text)
        assembler.overflowed.clear()
        for problem in assembler.problems:
            log.warning("client %s: %s; frame dropped", peer, problem)
        assembler.problems.clear()
        truncated = assembler.partial
        if truncated:
            # A WebSocket message carries whole frames; a frame that runs past its message
            # declared a length it did not send.
            assembler.partial = b""
            await self._answer_truncated(ws, peer, next_stream, truncated)
        for stream_id, kind, _payload in control:
            log.debug("client %s sent control frame kind %d on stream %d", peer, kind, stream_id)
        for _stream_id, body in streams:
            reply = await self._call(peer, body, large=len(body) > EXECUTOR_THRESHOLD)
            if reply is not None:
                await self._send_stream(ws, next_stream, reply)

    async def _call(self, peer: str, body: bytes, *, large: bool) -> bytes | None:
        """The response stream bytes for one call stream, or None when it cannot be answered."""
        try:
            header, method, args = await self._maybe_threaded(decode_call, body, large=large)
        except FrameError as exc:
            if len(body) >= muxio.RPC_HEADER_SIZE and body[0] == muxio.MSG_CALL:
                request_id, method_id = _ids_of(body)  # header readable: answer the caller
                return self._error_reply(peer, request_id, method_id, muxio.STATUS_FAIL, str(exc))
            log.warning("client %s sent an unusable call: %s", peer, exc)
            return None
        except CallError as exc:
            request_id, method_id = _ids_of(body)
            return self._error_reply(peer, request_id, method_id, exc.status, str(exc))
        try:
            assert self._store_lock is not None
            async with self._store_lock:
                result = await self._maybe_threaded(execute, self.store, method, args, large=large)
            payload = await self._maybe_threaded(rpc.encode_response, method, result, large=large)
        except CallError as exc:
            return self._error_reply(
                peer, header.request_id, header.method_id, exc.status, str(exc)
            )
        except (ValueError, TypeError, KeyError, ReadOnlyStoreError, StoreLockedError) as exc:
            return self._error_reply(
                peer,
                header.request_id,
                header.method_id,
                muxio.STATUS_FAIL,
                f"{method} failed: {exc}",
            )
        except Exception as exc:  # the store itself broke: report, keep serving others
            log.exception("store failure in %s from client %s", method, peer)
            return self._error_reply(
                peer,
                header.request_id,
                header.method_id,
                muxio.STATUS_SYSTEM_ERROR,
                f"{method} failed: {type(exc).__name__}: {exc}",
            )
        self.calls_served += 1
        return encode_reply(header.request_id, header.method_id, muxio.STATUS_SUCCESS, payload)

    def _error_reply(
        self, peer: str, request_id: int, method_id: int, status: int, text: str
    ) -> bytes:
        log.warning(
            "client %s: answering request %d with status %d: %s", peer, request_id, status, text
        )
        self.errors_answered += 1
        return encode_reply(request_id, method_id, status, text.encode("utf-8", "replace"))

    async def _answer_truncated(
        self, ws: ServerConnection, peer: str, next_stream: list[int], frame: bytes
    ) -> None:
        declared = int.from_bytes(frame[:4], "little") if len(frame) >= 4 else -1
        text = f"truncated frame: header declares {declared} payload bytes, message holds {max(len(frame) - muxio.FRAME_HEADER_SIZE, 0)}"
        body = frame[muxio.FRAME_HEADER_SIZE :]
        if len(body) >= muxio.RPC_HEADER_SIZE and body[0] == muxio.MSG_CALL:
            request_id, method_id = _ids_of(body)
            await self._send_stream(
                ws,
                next_stream,
                self._error_reply(peer, request_id, method_id, muxio.STATUS_FAIL, text),
            )
        else:
            log.warning("client %s: %s; dropped", peer, text)

    async def _maybe_threaded(self, fn: Callable[..., Any], *args: Any, large: bool) -> Any:
        if large:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return fn(*args)

    async def _send_stream(self, ws: ServerConnection, next_stream: list[int], body: bytes) -> None:
        """Send one response stream; frames are grouped into messages of about 1 MiB."""
        stream_id = next_stream[0]
        next_stream[0] = (stream_id + 1) & 0xFFFF_FFFF
        frames = muxio.encode_stream(stream_id, body)
        try:
            if len(body) <= RESPONSE_MESSAGE_BYTES:
                await ws.send(b"".join(frames))
                return
            group: list[bytes] = []
            size = 0
            for frame in frames:
                group.append(frame)
                size += len(frame)
                if size >= RESPONSE_MESSAGE_BYTES:
                    await ws.send(b"".join(group))
                    group, size = [], 0
            if group:
                await ws.send(b"".join(group))
        except ConnectionClosed:
            log.info("client %s went away before its response was sent", _peer(ws))


def _ids_of(body: bytes) -> tuple[int, int]:
    """Request and method id from a call stream's first bytes (0 where missing)."""
    request_id = int.from_bytes(body[1:5], "little") if len(body) >= 5 else 0
    method_id = int.from_bytes(body[5:13], "little") if len(body) >= 13 else 0
    return request_id, method_id


def _quick_ack_setter(ws: ServerConnection) -> Callable[[], None]:
    """A function that acknowledges received TCP data at once (Linux TCP_QUICKACK).

    The official client writes a call's Open and End frames as two small TCP writes without
    TCP_NODELAY, so Nagle holds the End frame until our ACK of the Open frame, which delayed
    ACK postpones by ~40 ms. Re-arming quick ACK after each message removes that stall.
    """
    sock = ws.transport.get_extra_info("socket")
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or option is None:
        return lambda: None

    def quick_ack() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    return quick_ack


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else "?"


def _only_ws_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] == WS_PATH:
        return None
    body = f"not found: the store is served at {WS_PATH}\n".encode()
    headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return Response(404, "Not Found", headers, body)


def run_server(
    store: Any,
    host: str,
    port: int,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until interrupted (or until `stop` is set); `on_ready` gets the ws:// URL."""

    async def main() -> None:
        server = StoreServer(store, host, port, max_message_size=max_message_size)
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
