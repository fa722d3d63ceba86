"""A simd-r-drive compatible WebSocket server over the embedded `DataStore`: accepting and calls.

Speaks what `simd-r-drive-ws-server` speaks (muxio frames, bitcode arguments, path ``/ws``) so
the official Python client `simd_r_drive_ws_client` and our `DataStoreWsClient` both work. This
module owns the listening socket, the set of connections and the store calls; one connection's
bytes and frames are store/connection.py, the handshake store/handshake.py, the limits
store/limits.py, and the `store serve` command store/serve.py.

Behaviour worth knowing:

* One asyncio thread. Small calls are answered inline (microseconds); a call whose stream exceeds
  `EXECUTOR_THRESHOLD` bytes runs in a worker thread under the store lock while this
  connection's reading is paused, so pings and other clients keep flowing and each client's
  calls stay in order. Replies are written only from the event-loop thread.
* No authentication exists in the protocol (docs/SECURITY.md): the server binds loopback by
  default, refuses browser Origins and, optionally, peers outside `--allow-from`, and bounds
  what a peer can make it hold: `--max-connections` (when full, the idlest connection -- one
  still in its handshake first -- is dropped so a new client gets in), a handshake timeout, an
  idle timeout, a per-connection cap on unfinished calls and a global memory budget.
* Like the reference (muxio's tokio server) the server sends a WebSocket ping every 5 s
  (`--ping-interval`); it does not drop a client that is slow to answer, because synchronous
  clients only read when called (only the idle timeout, on bytes *received*, does).
* Bad input never stops the server: an RPC whose header can be read gets an error response
  (status Fail for undecodable arguments, MethodNotFound for unknown ids, SystemError for a
  store failure such as a CRC mismatch, or any failure in the worker thread, so no call is ever
  left unanswered) with the reason as UTF-8 text; unusable frames are dropped. Repeated problems
  are logged a few times per 10 s each, then counted (`QuietLog`). Store writes are atomic per
  call, so a client vanishing mid-call leaves no partial batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from narrative_pipeline.store import muxio, rpc
from narrative_pipeline.store.bitcode import BitcodeError
from narrative_pipeline.store.connection import WsConnection, _ids_of
from narrative_pipeline.store.errors import CorruptStoreError, ReadOnlyStoreError, StoreLockedError
from narrative_pipeline.store.handshake import WS_PATH
from narrative_pipeline.store.limits import MAX_MESSAGE_SIZE, MemoryBudget, QuietLog, ServerLimits
from narrative_pipeline.store.muxio import FrameError
from narrative_pipeline.store.protocol import KeyValueStore

if TYPE_CHECKING:
    from narrative_pipeline.store.datastore import DataStore  # what serve.py passes

log = logging.getLogger(__name__)

EXECUTOR_THRESHOLD = 256 * 1024  # messages above this are handled off the event loop
PING_INTERVAL_S = 5.0
SWEEP_INTERVAL_S = 1.0  # how often handshake and idle deadlines are checked
LISTEN_BACKLOG = 1024
WRITE_METHODS = frozenset({"write", "batch_write", "delete"})
__all__ = ["MAX_MESSAGE_SIZE", "StoreServer", "WsConnection", "run_server"]


class CallError(Exception):
    """An RPC that must be answered with an error status instead of a result."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def execute(store: KeyValueStore, method: str, args: tuple) -> object:
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


def _tail_offset(store: KeyValueStore, returned: object) -> int:
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
        store: DataStore,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: ServerLimits | None = None,
        ping_interval: float | None = PING_INTERVAL_S,
        compact_ratio: float | None = None,
    ) -> None:
        self.store = store
        self.compact_ratio = compact_ratio  # compaction here, off the event loop (see _compact)
        self._compacting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.host = host
        self.port = port
        self.limits = limits or ServerLimits()
        self.budget = MemoryBudget(self.limits.memory_budget)
        self.quiet = QuietLog(log)
        self.ping_interval = ping_interval
        self.connections: set[WsConnection] = set()
        self.store_lock: asyncio.Lock | None = None
        self._server: asyncio.Server | None = None
        self._housekeeper: asyncio.Task | None = None
        self.calls_served = 0
        self.errors_answered = 0
        self.evicted = 0

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the (host, port) actually bound."""
        loop = self._loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        self.store_lock = asyncio.Lock()
        self._server = await loop.create_server(
            lambda: WsConnection(self),
            self.host,
            self.port,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._housekeeper = asyncio.create_task(self._housekeeping())
        log.info("serving %s (%s)", self.url, self.describe_limits())
        return self.host, self.port

    def describe_limits(self) -> str:
        limits = self.limits
        return (
            f"max {limits.max_connections} connections, message <= {limits.max_message_size} B, "
            f"unfinished calls <= {limits.pending_cap} B a connection and "
            f"{limits.memory_budget} B in all, handshake {limits.handshake_timeout} s, "
            f"idle {limits.idle_timeout} s, origins {sorted(limits.allow_origins) or 'none'}, "
            f"peers {[str(n) for n in limits.allow_from] or 'any'}"
        )

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """asyncio's own errors (accept failures, say), rate-limited like ours."""
        exc = context.get("exception")
        kind = f"loop-{type(exc).__name__}" if exc else "loop"
        self.quiet.warning(kind, "event loop: %s: %r", context.get("message"), exc)

    def admit(self, connection: WsConnection) -> None:
        """Register a new connection; when full, drop the idlest to make room for it."""
        if len(self.connections) >= self.limits.max_connections:
            victim = min(
                (c for c in self.connections if c.task is None),
                key=lambda c: (c.upgraded, c.last_read),
                default=None,
            )
            if victim is None:
                connection.abort("server at --max-connections, all of them busy")
                return
            self.evicted += 1
            self.connections.discard(victim)
            victim.abort(f"evicted (idlest of {len(self.connections) + 1} at --max-connections)")
        self.connections.add(connection)

    async def _housekeeping(self) -> None:
        """Pings every `ping_interval`; handshake and idle deadlines every second."""
        next_ping = time.monotonic() + (self.ping_interval or 0)
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            self._expire(now)
            self.quiet.flush()
            if self.ping_interval and now >= next_ping:
                next_ping = now + self.ping_interval
                for connection in list(self.connections):
                    connection.send_ping()

    def _expire(self, now: float) -> None:
        handshake_by = now - self.limits.handshake_timeout
        idle = self.limits.idle_timeout
        for connection in list(self.connections):
            if not connection.upgraded and connection.opened_at < handshake_by:
                connection.abort(f"no complete handshake within {self.limits.handshake_timeout} s")
            elif idle and connection.task is None and now - connection.last_read > idle:
                connection.abort(f"idle for more than {idle} s (--idle-timeout)")

    async def close(self) -> None:
        """Stop accepting, say goodbye (1001) to every client, and wait for the running call."""
        if self._housekeeper:
            self._housekeeper.cancel()
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
            self.quiet.warning("call", "client %s sent an unusable call: %s", peer, exc)
            return None
        except CallError as exc:
            request_id, method_id = _ids_of(body)
            return self.error_reply(peer, request_id, method_id, exc.status, str(exc))
        try:
            payload = rpc.encode_response(method, execute(self.store, method, args))
        except CallError as exc:
            return self.error_reply(peer, header.request_id, header.method_id, exc.status, str(exc))
        except CorruptStoreError as exc:  # a damaged entry: say so, never send its bytes
            text = f"{method} failed: {exc}"
            return self.error_reply(
                peer, header.request_id, header.method_id, muxio.STATUS_SYSTEM_ERROR, text
            )
        except (ValueError, TypeError, KeyError, ReadOnlyStoreError, StoreLockedError) as exc:
            text = f"{method} failed: {exc}"
            return self.error_reply(
                peer, header.request_id, header.method_id, muxio.STATUS_FAIL, text
            )
        except Exception as exc:  # the store itself broke: report, keep serving others
            self.quiet.log(
                logging.ERROR, "store", "store failure in %s from %s", method, peer, exc_info=True
            )
            text = f"{method} failed: {type(exc).__name__}: {exc}"
            return self.error_reply(
                peer, header.request_id, header.method_id, muxio.STATUS_SYSTEM_ERROR, text
            )
        self.calls_served += 1
        if self.compact_ratio and method in WRITE_METHODS:
            self._compact_if_due()
        return encode_reply(header.request_id, header.method_id, muxio.STATUS_SUCCESS, payload)

    def _compact_if_due(self) -> None:
        """After a write: start a compaction if the file passed the threshold (docs/SECURITY.md).

        It runs in a worker thread holding the store lock, so pings keep flowing and calls wait
        for it (rather than the event loop stalling for the seconds a big file takes).
        """
        if self._compacting or self._loop is None:
            return
        if self.store.compaction_due(self.compact_ratio):
            self._compacting = True
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._compact()))

    async def _compact(self) -> None:
        assert self.store_lock is not None
        try:
            async with self.store_lock:
                await asyncio.get_running_loop().run_in_executor(None, self.store.compact)
        except Exception:
            self.quiet.log(logging.ERROR, "compact", "automatic compaction failed", exc_info=True)
        finally:
            self._compacting = False

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
        self.quiet.warning(
            f"status-{status}",
            "client %s: answering request %d with status %d: %s",
            peer,
            request_id,
            status,
            text,
        )
        self.errors_answered += 1
        return encode_reply(request_id, method_id, status, text.encode("utf-8", "replace"))


def run_server(
    store: DataStore,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    ping_interval: float | None = PING_INTERVAL_S,
    compact_ratio: float | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until interrupted (or until `stop` is set); `on_ready` gets the ws:// URL."""

    async def main() -> None:
        server = StoreServer(
            store,
            host,
            port,
            limits=limits,
            ping_interval=ping_interval,
            compact_ratio=compact_ratio,
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
                "server stopped after %d calls (%d answered with errors, %d connections "
                "evicted, peak %d bytes of unfinished input held)",
                server.calls_served,
                server.errors_answered,
                server.evicted,
                server.budget.peak,
            )

    asyncio.run(main())
