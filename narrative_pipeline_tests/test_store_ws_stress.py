"""Stress: hammer the server paths where a response could be lost or a wakeup missed.

Written after one benchmark run hung (client waiting in poll, server idle in epoll). The test
runs, at the same time and for a bounded time on loopback:

* our client and the official client doing sequential batch_writes of a few MB (worker thread
  under the store lock, responses in 64 KiB muxio chunks) mixed with batch_reads that check
  every byte;
* a client doing many small calls (answered inline, or queued behind the store lock);
* a raw client that splits calls over many muxio frames, many WebSocket messages and many
  WebSocket fragments with pings between them, sends them in small TCP pieces (half-received
  calls), and pipelines a big call followed by small ones in one message (the backlog path);

with the server pinging every 20 ms. A lost response shows up as a client timeout (ours), a
thread still blocked at the end (official), or a wrong answer.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from narrative_pipeline.store import muxio, rpc, websocket
from narrative_pipeline.store.ws_client import DataStoreWsClient
from narrative_pipeline_tests.ws_fixtures import ServerProcess, start_store_server

official = pytest.importorskip(
    "simd_r_drive_ws_client", reason="the official client wheel is not installed"
)

DURATION_S = float(os.environ.get("NARRATIVE_WS_STRESS_SECONDS", "10"))  # longer hunts: raise it
CALL_TIMEOUT_S = 20.0  # far above any call here: running into it means a lost response


def _big_value(rng: random.Random) -> bytes:
    # Sizes around the 64 KiB muxio chunk and 1 MiB response-message boundaries.
    size = rng.choice([1, 65_535, 65_536, 65_537, 300_000, 1 << 20, (1 << 20) + 7])
    return b"v" + os.urandom(16) * (size // 16) + os.urandom(size % 16)  # never a tombstone


def _big_batches(client: object, tag: str, rng: random.Random, deadline: float) -> int:
    """Sequential batch_writes of ~1-4 MB, each read back (batch_read) and compared."""
    calls = 0
    while time.monotonic() < deadline:
        items = [(f"{tag}-{calls}-{i}".encode(), _big_value(rng)) for i in range(rng.randint(2, 6))]
        client.batch_write(items)
        keys = [k for k, _ in items] + [f"{tag}-missing".encode()]
        assert client.batch_read(keys) == [v for _, v in items] + [None], f"{tag} call {calls}"
        calls += 2
    return calls


def _small_calls(client: DataStoreWsClient, rng: random.Random, deadline: float) -> int:
    calls = 0
    while time.monotonic() < deadline:
        key = f"small-{rng.randrange(50)}".encode()
        value = os.urandom(rng.randrange(1, 200))
        client.write(key, value)
        assert client.read(key) == value
        assert client.batch_read([key, b"small-missing"]) == [value, None]
        calls += 3
    return calls


class _RawClient:
    """A hand-rolled client that sends calls in the most fragmented ways the protocol allows."""

    def __init__(self, server: ServerProcess, rng: random.Random) -> None:
        self.rng = rng
        self.sock = socket.create_connection((server.host, server.port), timeout=CALL_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = websocket.new_key()
        self.sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        end = self.buf.index(b"\r\n\r\n") + 4
        assert websocket.accept_key(key) in bytes(self.buf[:end])
        del self.buf[:end]
        self.assembler = muxio.StreamAssembler()
        self.next_stream = 1
        self.next_request = 1

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _send_in_pieces(self, data: bytes) -> None:
        """Small TCP writes with pauses, so the server sees frames and calls half-received."""
        pos = 0
        while pos < len(data):
            step = self.rng.choice([1, 7, 100, 5000, 70_000, len(data)])
            self.sock.sendall(data[pos : pos + step])
            pos += step
            if self.rng.random() < 0.05:
                time.sleep(0.001)

    def _message_frames(self, message: bytes) -> bytes:
        """One WebSocket message as 1-4 fragments, with pings between some fragments."""
        cuts = sorted(self.rng.sample(range(1, len(message)), min(3, len(message) - 1)))
        cuts = cuts[: self.rng.randint(0, len(cuts))]
        pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
        out = []
        for i, piece in enumerate(pieces):
            opcode = websocket.OP_BINARY if i == 0 else websocket.OP_CONT
            out.append(websocket.encode_frame(opcode, piece, mask=True, fin=i == len(pieces) - 1))
            if self.rng.random() < 0.3:
                out.append(websocket.encode_frame(websocket.OP_PING, b"p", mask=True))
        return b"".join(out)

    def call_stream(self, method: str, *args: object) -> tuple[int, bytes]:
        """(request id, the WebSocket bytes of the call): muxio chunks of random small size."""
        request_id = self.next_request
        self.next_request += 1
        args_bytes = rpc.encode_request(method, *args)
        body = muxio.encode_rpc(muxio.MSG_CALL, request_id, rpc.METHOD_IDS[method], b"", args_bytes)
        tiny = [1, 100] if len(body) < 10_000 else []  # 1-byte muxio frames: small calls only
        chunk = self.rng.choice([*tiny, 4096, muxio.CHUNK_SIZE])
        frames = muxio.encode_stream(self.next_stream, body, chunk_size=chunk)
        self.next_stream += 2
        messages: list[bytes] = []
        while frames:  # several muxio frames per WebSocket message, or one each
            take = self.rng.randint(1, 4)
            messages.append(b"".join(frames[:take]))
            frames = frames[take:]
        return request_id, b"".join(map(self._message_frames, messages))

    def send(self, data: bytes) -> None:
        self._send_in_pieces(data)

    def response(self, request_id: int) -> bytes:
        """The payload of the Success response to request_id (answers pings while waiting)."""
        while True:
            parsed = websocket.parse_frame(self.buf, 0)
            if parsed is None:
                self._recv()
                continue
            fin, opcode, payload, end = parsed
            del self.buf[:end]
            assert fin, "the server sends unfragmented messages"
            if opcode == websocket.OP_PING:
                self.sock.sendall(websocket.encode_frame(websocket.OP_PONG, payload, mask=True))
                continue
            if opcode == websocket.OP_PONG:  # the answer to one of our pings
                continue
            assert opcode == websocket.OP_BINARY, f"unexpected opcode {opcode}"
            streams, _ = self.assembler.feed(payload)
            for _stream_id, body in streams:
                header, result = muxio.decode_rpc(body)
                assert header.request_id == request_id, "responses must come in call order"
                assert header.metadata == bytes((muxio.STATUS_SUCCESS,)), bytes(result)
                return bytes(result)

    def close(self) -> None:
        self.sock.close()


def _fragmented_calls(server: ServerProcess, rng: random.Random, deadline: float) -> int:
    raw = _RawClient(server, rng)
    calls = 0
    try:
        while time.monotonic() < deadline:
            big = [(f"raw-{calls}-{i}".encode(), _big_value(rng)) for i in range(rng.randint(1, 3))]
            keys = [k for k, _ in big]
            # A big call then small ones, all sent before reading: the small ones wait in the
            # server's backlog behind the worker thread and must still be answered in order.
            pipeline = [raw.call_stream("batch_write", big)]
            pipeline += [raw.call_stream("exists", keys[0]), raw.call_stream("batch_read", keys)]
            raw.send(b"".join(data for _, data in pipeline))
            replies = [raw.response(request_id) for request_id, _ in pipeline]
            assert rpc.decode_response("exists", replies[1]) is True
            assert rpc.decode_response("batch_read", replies[2]) == [v for _, v in big]
            calls += len(pipeline)
    finally:
        raw.close()
    return calls


def _run_bounded(workers: dict[str, Callable[[], int]], limit: float) -> dict[str, int]:
    """Run the workers in threads; fail naming any that raised or is still blocked at `limit`."""
    results: dict[str, int] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str, work: Callable[[], int]) -> None:
        try:
            results[name] = work()
        except BaseException as exc:  # reported below with the worker's name
            errors[name] = exc

    threads = [
        threading.Thread(target=run, args=item, daemon=True, name=item[0])
        for item in workers.items()
    ]
    for thread in threads:
        thread.start()
    end = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    blocked = [thread.name for thread in threads if thread.is_alive()]
    assert not blocked, f"workers still waiting for a response: {blocked}; {results=}"
    assert not errors, f"workers failed: {errors!r}"
    return results


@pytest.mark.slow
def test_no_response_is_lost_under_mixed_load(tmp_path: Path) -> None:
    server = start_store_server(
        tmp_path / "stress.bin", extra_args=["--ping-interval", "0.02"], full_cli=False
    )
    try:
        ours = DataStoreWsClient(
            server.host, server.port, timeout=CALL_TIMEOUT_S, batch_timeout=CALL_TIMEOUT_S
        )
        small = DataStoreWsClient(
            server.host, server.port, timeout=CALL_TIMEOUT_S, batch_timeout=CALL_TIMEOUT_S
        )
        theirs = official.DataStoreWsClient(server.host, server.port)
        deadline = time.monotonic() + DURATION_S
        results = _run_bounded(
            {
                "ours-big": lambda: _big_batches(ours, "ours", random.Random(1), deadline),
                "official-big": lambda: _big_batches(theirs, "off", random.Random(2), deadline),
                "ours-small": lambda: _small_calls(small, random.Random(3), deadline),
                "raw-fragmented": lambda: _fragmented_calls(server, random.Random(4), deadline),
            },
            limit=DURATION_S + CALL_TIMEOUT_S + 10,
        )
        assert all(count > 0 for count in results.values()), results
        print(f"calls answered in {DURATION_S:.0f} s: {results}")
        assert server.alive(), server.log_text()[-3000:]
    finally:
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log and "call failed" not in log, log[-3000:]
