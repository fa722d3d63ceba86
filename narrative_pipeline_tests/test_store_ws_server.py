"""The WebSocket server as a subprocess, driven by our client and by the official client.

The official client (`simd_r_drive_ws_client` 0.11.1a0, a compiled Rust wheel) is the oracle:
whatever it can do against the Rust server it must be able to do against ours.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from narrative_pipeline.store import muxio, rpc
from narrative_pipeline.store.ws_client import DataStoreWsClient
from narrative_pipeline_tests import ws_fixtures
from narrative_pipeline_tests.ws_fixtures import ServerProcess, start_store_server

store_server = ws_fixtures.store_server  # the reusable fixture, registered in this module

official = pytest.importorskip(
    "simd_r_drive_ws_client", reason="official client: pip install simd-r-drive-ws-client==0.11.1a0"
)
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

CLIENTS = ["ours", "official"]


def make_client(kind: str, server: ServerProcess):
    if kind == "ours":
        return DataStoreWsClient(server.host, server.port, timeout=20.0, batch_timeout=30.0)
    return official.DataStoreWsClient(server.host, server.port)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_store_server(tmp_path_factory.mktemp("ws") / "shared.bin")
    yield server
    server.stop()


@pytest.mark.parametrize("kind", CLIENTS)
def test_every_method(kind: str, store_server: ServerProcess) -> None:
    client = make_client(kind, store_server)
    assert client.is_empty() is True
    assert len(client) == 0
    assert client.file_size() == 0
    assert client.write(b"alice", b"hello") is None
    assert client.read(b"alice") == b"hello"
    assert client.read(b"nobody") is None
    assert client.exists(b"alice") is True and client.exists(b"nobody") is False
    assert b"alice" in client and b"nobody" not in client
    client.batch_write([(b"k1", b"v1"), (b"key2", b"value2"), (b"bin", b"\x00\x01")])
    assert client.batch_read([b"k1", b"zz", b"key2", b"bin"]) == [
        b"v1",
        None,
        b"value2",
        b"\x00\x01",
    ]
    assert client.batch_read([]) == []
    assert client.batch_read_structured({"a": b"k1", "b": b"missing"}) == {"a": b"v1", "b": None}
    assert client.batch_read_structured([{"x": b"alice"}, {"y": b"key2", "z": b"k1"}]) == [
        {"x": b"hello"},
        {"y": b"value2", "z": b"v1"},
    ]
    assert len(client) == 4 and client.is_empty() is False
    client.write(b"alice", b"overwritten")
    assert client.read(b"alice") == b"overwritten" and len(client) == 4
    client.delete(b"alice")
    client.delete(b"never-existed")
    assert client.read(b"alice") is None and not client.exists(b"alice")
    assert len(client) == 3
    assert client.file_size() == (store_server.path.stat().st_size)
    assert client.write(b"z", bytes(300)) is None and client.read(b"z") == bytes(300)


def test_clients_see_each_others_writes(shared_server: ServerProcess) -> None:
    ours, theirs = make_client("ours", shared_server), make_client("official", shared_server)
    ours.batch_write([(b"from-ours-%d" % i, b"%d" % i) for i in range(100)])
    assert theirs.batch_read([b"from-ours-%d" % i for i in range(100)]) == [
        b"%d" % i for i in range(100)
    ]
    theirs.write(b"from-theirs", b"payload")
    assert ours.read(b"from-theirs") == b"payload"
    assert ours.file_size() == theirs.file_size() == shared_server.path.stat().st_size


@pytest.mark.parametrize("kind", CLIENTS)
def test_large_payloads_and_batches(kind: str, shared_server: ServerProcess) -> None:
    client = make_client(kind, shared_server)
    big = os.urandom(1024) * (20 * 1024)  # 20 MiB, past several 64 KiB frames and 1 MiB messages
    client.write(kind.encode() + b"-big", big)
    assert client.read(kind.encode() + b"-big") == big
    entries = [
        (kind.encode() + i.to_bytes(8, "little"), b"v" + os.urandom(i % 300)) for i in range(30_000)
    ]
    client.batch_write(entries)
    assert client.batch_read([k for k, _ in entries]) == [v for _, v in entries]


def _writer(
    host: str, port: int, kind: str, worker: int, overlapping: bool, rounds: int
) -> dict[bytes, bytes]:
    client = (
        DataStoreWsClient(host, port) if kind == "ours" else official.DataStoreWsClient(host, port)
    )
    written = {}
    for r in range(rounds):
        prefix = b"shared" if overlapping else b"w%d" % worker
        batch = [(prefix + b"-%d" % i, b"w%d-r%d-%d" % (worker, r, i)) for i in range(50)]
        client.batch_write(batch)
        written.update(batch)
        assert client.batch_read([k for k, _ in batch[:5]]) is not None
    return written


@pytest.mark.parametrize("overlapping", [False, True], ids=["disjoint", "overlapping"])
def test_ten_concurrent_clients(overlapping: bool, store_server: ServerProcess) -> None:
    results: dict[int, dict[bytes, bytes]] = {}
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            kind = CLIENTS[worker % 2]  # five of ours, five official
            results[worker] = _writer(
                store_server.host, store_server.port, kind, worker, overlapping, rounds=20
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    client = make_client("ours", store_server)
    if overlapping:
        keys = [b"shared-%d" % i for i in range(50)]
        values = client.batch_read(keys)
        # Each key ends with some writer's last round; batches are atomic, so whole batches win.
        finals = {v.split(b"-")[0] for v in values}
        assert all(v.split(b"-")[1] == b"r19" for v in values)
        assert len(finals) == 1, f"one batch must win whole, saw writers {finals}"
        assert len(client) == 50
    else:
        for worker, written in results.items():
            keys = list(written)
            assert client.batch_read(keys) == [written[k] for k in keys], f"worker {worker}"
        assert len(client) == 500


def test_restart_over_the_same_file(store_server: ServerProcess) -> None:
    client = make_client("ours", store_server)
    client.batch_write([(b"k%d" % i, b"v%d" % i) for i in range(1000)])
    client.delete(b"k5")
    size = client.file_size()
    store_server.restart(same_port=True)
    # Our client notices the closed connection and reconnects on its own.
    assert client.read(b"k999") == b"v999" and client.read(b"k5") is None
    assert len(client) == 999 and client.file_size() == size
    assert make_client("official", store_server).read(b"k1") == b"v1"


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from narrative_pipeline.store.ws_client import DataStoreWsClient
    client = DataStoreWsClient(sys.argv[1], int(sys.argv[2]))
    value = b"x" * 4000
    n = 0
    while True:
        client.batch_write([(b"batch%06d-%04d" % (n, i), value) for i in range(2000)])
        print(n, flush=True)
        n += 1
    """
)


def test_client_killed_mid_batch(store_server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), store_server.host, str(store_server.port)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert writer.stdout is not None
    for _ in range(3):  # let a few batches land, then kill while the next is in flight
        writer.stdout.readline()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    client = make_client("official", store_server)
    count = len(client)
    assert count % 2000 == 0 and count >= 6000, f"{count} entries: a batch was applied partly"
    batches = count // 2000
    assert client.read(b"batch%06d-%04d" % (batches - 1, 1999)) == b"x" * 4000
    assert client.read(b"batch%06d-%04d" % (batches, 0)) is None
    store_server.restart()
    assert len(make_client("ours", store_server)) == count


# ---------------------------------------------------------------------------- bad input


def _call_frames(method_id: int, metadata: bytes, request_id: int = 77) -> bytes:
    return b"".join(
        muxio.encode_stream(0, muxio.encode_rpc(muxio.MSG_CALL, request_id, method_id, metadata))
    )


def _response(ws) -> tuple[muxio.RpcHeader, bytes]:
    assembler = muxio.StreamAssembler()
    while True:
        done, _ = assembler.feed(ws.recv(timeout=10))
        if done:
            header, payload = muxio.decode_rpc(done[0][1])
            return header, bytes(payload)


def test_bad_inputs_get_error_answers(shared_server: ServerProcess) -> None:
    read_id = rpc.METHOD_IDS["read"]
    with connect(shared_server.url, max_size=None) as ws:
        ws.send(_call_frames(0xDEADBEEF, b""))
        header, text = _response(ws)
        assert (header.request_id, header.metadata) == (77, bytes([muxio.STATUS_METHOD_NOT_FOUND]))
        assert b"unknown method id" in text

        ws.send(_call_frames(read_id, b"\x05\x00ab"))  # key declares 5 bytes, carries 2
        header, text = _response(ws)
        assert header.metadata == bytes([muxio.STATUS_FAIL]) and b"truncated" in text

        body = muxio.encode_rpc(muxio.MSG_CALL, 78, read_id, rpc.encode_request("read", b"k"))
        lying_frame = muxio.encode_frame(1, 0, muxio.KIND_OPEN, body)
        lying_frame = (len(body) + 500).to_bytes(4, "little") + lying_frame[4:]  # frame length lies
        ws.send(lying_frame)
        header, text = _response(ws)
        assert header.request_id == 78 and header.metadata == bytes([muxio.STATUS_FAIL])
        assert b"truncated frame" in text

        lying_rpc = body[:13] + (900).to_bytes(2, "little") + body[15:]  # metadata length lies
        ws.send(b"".join(muxio.encode_stream(2, lying_rpc)))
        header, text = _response(ws)
        assert header.metadata == bytes([muxio.STATUS_FAIL]) and b"metadata length 900" in text

        lying_count = rpc.encode_request("batch_read", [b"a"])
        lying_count = bytes([200]) + lying_count[1:]  # 200 keys declared, 1 sent
        ws.send(_call_frames(rpc.METHOD_IDS["batch_read"], lying_count))
        header, _ = _response(ws)
        assert header.metadata == bytes([muxio.STATUS_FAIL])

        ws.send(muxio.encode_frame(5, 0, 9, b"junk"))  # unknown frame kind: dropped
        ws.send(muxio.encode_frame(6, 3, muxio.KIND_END))  # End of a stream never opened
        ws.send(b"\x01\x02\x03")  # shorter than a frame header
        ws.send("text is not muxio")
        ws.send(_call_frames(rpc.METHOD_IDS["len"], b"", request_id=99))
        header, _ = _response(ws)
        assert header.request_id == 99 and header.metadata == bytes([muxio.STATUS_SUCCESS])
    assert shared_server.alive()
    assert make_client("official", shared_server).read(b"from-theirs") in (b"payload", None)
    log = shared_server.log_text()
    assert "unknown method id" in log and "unknown frame kind 9" in log


def test_oversized_message_closes_only_that_connection(tmp_path: Path) -> None:
    server = start_store_server(tmp_path / "small.bin", extra_args=["--max-message-mib", "1"])
    try:
        bystander = make_client("official", server)
        bystander.write(b"k", b"v")
        with connect(server.url, max_size=None) as ws:
            ws.send(_call_frames(rpc.METHOD_IDS["write"], b"") + bytes(2 * 1024 * 1024))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert bystander.read(b"k") == b"v"
        ours = make_client("ours", server)
        with pytest.raises(OSError, match="ws://127.0.0.1"):
            ours.write(b"huge", os.urandom(2 * 1024 * 1024))  # random: bitcode cannot pack it
        assert ours.read(b"k") == b"v"
    finally:
        server.stop()


def test_wrong_path_is_refused(shared_server: ServerProcess) -> None:
    with (
        pytest.raises(InvalidStatus, match="404"),
        connect(f"ws://{shared_server.host}:{shared_server.port}/other"),
    ):
        pass


def test_silent_and_stalled_clients_do_not_block_others(shared_server: ServerProcess) -> None:
    key = b"stall-big"
    make_client("ours", shared_server).write(key, os.urandom(8 * 1024 * 1024))
    from narrative_pipeline.store.ws_client import _Connection  # raw connections we drive by hand

    silent = socket.create_connection((shared_server.host, shared_server.port))  # never upgrades
    half = _Connection(shared_server.host, shared_server.port, 5.0)
    half.send_messages([muxio.encode_frame(0, 0, muxio.KIND_OPEN, b"\x00\x01")])  # never ends
    stalled = _Connection(shared_server.host, shared_server.port, 5.0)
    body = muxio.encode_rpc(
        muxio.MSG_CALL, 1, rpc.METHOD_IDS["read"], rpc.encode_request("read", key)
    )
    for _ in range(4):  # 32 MiB of answers it never reads
        stalled.send_messages(muxio.encode_stream(0, body))
    client = make_client("official", shared_server)
    started = time.monotonic()
    for i in range(50):
        client.write(b"alive-%d" % i, b"x")
        assert client.read(b"alive-%d" % i) == b"x"
    assert time.monotonic() - started < 10
    silent.close()
    half.close()
    stalled.close()


# ---------------------------------------------------------------------------- our client


def test_connection_errors_name_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"ws://127.0.0.1:{port}/ws"):
        DataStoreWsClient("127.0.0.1", port)


def test_timeout_names_the_address() -> None:
    with socket.socket() as mute:  # accepts connections (kernel backlog) but never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        port = mute.getsockname()[1]
        with pytest.raises(TimeoutError, match=f"ws://127.0.0.1:{port}/ws"):
            DataStoreWsClient("127.0.0.1", port, timeout=0.5)


FORK_AND_PICKLE_SCRIPT = """
import multiprocessing, os, pickle, sys
from narrative_pipeline.store.ws_client import DataStoreWsClient

def child_reads(client, queue):
    queue.put((os.getpid(), client.read(b"k1"), client._conn is not None and client._pid == os.getpid()))

client = DataStoreWsClient(sys.argv[1], int(sys.argv[2]))
client.write(b"k1", b"parent")
parent_conn = client._conn
ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
children = [ctx.Process(target=child_reads, args=(client, queue)) for _ in range(3)]
for child in children:
    child.start()
answers = [queue.get(timeout=30) for _ in children]
for child in children:
    child.join(30)
assert [a[1] for a in answers] == [b"parent"] * 3 and all(a[2] for a in answers), answers
assert client._conn is parent_conn and client.read(b"k1") == b"parent"
clone = pickle.loads(pickle.dumps(client))
assert clone.read(b"k1") == b"parent" and clone._conn is not parent_conn
print("fork-and-pickle-ok")
"""


def test_client_is_safe_across_fork_and_pickle(shared_server: ServerProcess) -> None:
    """Forked children (DataLoader workers) and unpickled copies open their own connections.

    Runs in a fresh interpreter: forking this test process, which by then holds threads of many
    other tests (torch, Dagster), can deadlock the child in code that is not the client's.
    """
    result = subprocess.run(
        [sys.executable, "-c", FORK_AND_PICKLE_SCRIPT, shared_server.host, str(shared_server.port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "fork-and-pickle-ok" in result.stdout


def test_error_status_raises_oserror_with_text(shared_server: ServerProcess) -> None:
    client = make_client("ours", shared_server)
    with pytest.raises(TypeError):
        client.write("not bytes", b"x")  # type: ignore[arg-type]
    client.write(b"still", b"works")
    assert client.read(b"still") == b"works"


def test_module_entry_point(tmp_path: Path) -> None:
    """`python -m narrative_pipeline.store.serve PATH --port 0` (used by the benchmarks) serves too."""
    server = start_store_server(tmp_path / "cli.bin", full_cli=False)
    try:
        client = make_client("official", server)
        client.write(b"k", b"v")
        assert make_client("ours", server).read(b"k") == b"v"
    finally:
        assert server.stop() == 0
    assert "server stopped after" in server.log_text()


def test_pings_reach_clients_and_idle_clients_keep_working(tmp_path: Path) -> None:
    server = start_store_server(tmp_path / "ping.bin", extra_args=["--ping-interval", "0.2"])
    try:
        ours, theirs = make_client("ours", server), make_client("official", server)
        ours.write(b"k", b"v")
        with connect(server.url) as raw:
            time.sleep(1.0)  # several pings arrive while nobody calls
            raw.send(_call_frames(rpc.METHOD_IDS["len"], b"", request_id=5))
            header, _ = _response(raw)
            assert header.request_id == 5
        assert ours._conn is not None and ours._conn.poller.poll(0)  # pings are waiting for us
        connection = ours._conn
        assert ours.read(b"k") == b"v" and theirs.read(b"k") == b"v"
        # ...and were answered on the way: the same connection, no reconnect. (Checking that the
        # socket is empty after the read raced with the next ping on a loaded machine.)
        assert ours._conn is connection
    finally:
        server.stop()


def test_call_ids_follow_the_official_client() -> None:
    from narrative_pipeline.store.ws_client import _call_ids

    # Observed from simd-r-drive-ws-client 0.11.1a0 (stream id, request id) per call.
    assert [_call_ids(n) for n in range(5)] == [(0, 1), (3, 2), (5, 4), (7, 6), (9, 8)]


def _capture_first_call(call) -> list[bytes]:
    """Run `call(client)` against a bare WebSocket endpoint; return the muxio frames it sent."""
    import base64
    import hashlib

    from narrative_pipeline.store.websocket import GUID as WS_GUID
    from narrative_pipeline.store.websocket import apply_mask as _apply_mask

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    frames: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = [
                ln.split(b":", 1)[1].strip()
                for ln in head.split(b"\r\n")
                if ln.lower().startswith(b"sec-websocket-key")
            ][0]
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept
                + b"\r\n\r\n"
            )
            data = b""
            while len(frames) < 2:
                data += conn.recv(65536)
                while len(data) >= 6 and len(data) >= 6 + (data[1] & 0x7F):
                    n = data[1] & 0x7F  # the captured calls are all short
                    frames.append(_apply_mask(data[6 : 6 + n], data[2:6]))
                    data = data[6 + n :]
            header, _ = muxio.decode_rpc(frames[0][muxio.FRAME_HEADER_SIZE :])
            method = rpc.METHOD_NAMES[header.method_id]
            value = 25 if method == "write" else [None] * 3
            reply = muxio.encode_rpc(
                muxio.MSG_RESPONSE,
                header.request_id,
                header.method_id,
                b"\x00",
                rpc.encode_response(method, value),
            )
            message = b"".join(muxio.encode_stream(0, reply))
            conn.sendall(bytes((0x82, len(message))) + message)
            conn.recv(1)  # until the client goes away

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = DataStoreWsClient("127.0.0.1", port, timeout=10)
    call(client)
    client.close()
    thread.join(10)
    listener.close()
    return frames


@pytest.mark.parametrize(
    ("call", "golden"),
    [
        (
            lambda c: c.write(b"alice", b"hello"),
            "1d000000000000000000000000e468c1f7256106000001000000da538c305cadc23e0e000500616c696365050068656c6c6f",
        ),
        (
            lambda c: c.batch_read([bytes(16)] * 3),
            "1b00000000000000000000000012d3b9f9256106000001000000c284728b140b03010c0003001010100a000000000000",
        ),
    ],
    ids=["write", "batch_read"],
)
def test_our_client_sends_the_golden_bytes(call, golden: str) -> None:
    frames = _capture_first_call(call)
    expected = bytes.fromhex(golden)
    end = bytes.fromhex("00000000000000000100000002e668c1f725610600")
    assert frames[0][:13] + frames[0][21:] == expected[:13] + expected[21:]  # timestamps aside
    assert frames[1][:13] == end[:13] and len(frames[1]) == 21


def test_a_response_over_the_client_cap_fails_fast_instead_of_waiting(
    shared_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client used to cap responses at 256 MiB like calls and silently drop a bigger one:
    # the call then waited for its timeout while the server sat idle. Now responses are not
    # capped; a cap, when set (1 MiB here as a stand-in), fails the call at once.
    from narrative_pipeline.store import ws_client

    value = os.urandom(3 << 20)  # random: bitcode would compress a repeated byte
    DataStoreWsClient(shared_server.host, shared_server.port).write(b"big-answer", value)
    assert ws_client._MAX_RESPONSE_BYTES > 1 << 40
    monkeypatch.setattr(ws_client, "_MAX_RESPONSE_BYTES", 1 << 20)
    client = DataStoreWsClient(shared_server.host, shared_server.port, batch_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(OSError, match="more than 1048576 bytes"):
        client.batch_read([b"big-answer"])
    assert time.monotonic() - started < 10
    assert client.read(b"k-missing") is None  # the connection was replaced, calls go on


def test_a_failure_in_the_worker_thread_still_answers_that_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A big call runs in a worker thread. An unexpected exception there used to leave it (and
    # the calls queued behind it) unanswered: the client waited for its timeout.
    from narrative_pipeline.store import server as server_module
    from narrative_pipeline.store.datastore import DataStore

    real_decode = rpc.decode_request
    failing = threading.Event()

    def decode_failing_on_big_calls(method: str, data: bytes) -> tuple:
        if failing.is_set() and len(data) > server_module.EXECUTOR_THRESHOLD:
            raise RuntimeError("stand-in for a bug in the decoder")
        return real_decode(method, data)

    monkeypatch.setattr(server_module.rpc, "decode_request", decode_failing_on_big_calls)
    writers: set[int] = set()  # threads that wrote to a transport: must be the loop's only
    real_write_frame = server_module.WsConnection._write_frame

    def recording_write_frame(self, opcode: int, payload: bytes) -> None:
        writers.add(threading.get_ident())
        real_write_frame(self, opcode, payload)

    monkeypatch.setattr(server_module.WsConnection, "_write_frame", recording_write_frame)
    store = DataStore(tmp_path / "bug.bin")
    ready: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=server_module.run_server,
        args=(store, "127.0.0.1", 0),
        kwargs={"ping_interval": None, "on_ready": ready.append, "stop": stop},
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        port = int(ready[0].rsplit(":", 1)[1].split("/")[0])
        client = DataStoreWsClient("127.0.0.1", port, timeout=20.0, batch_timeout=20.0)
        client.batch_write([(b"fine", os.urandom(400_000))])  # runs in a worker thread
        failing.set()
        started = time.monotonic()
        with pytest.raises(OSError, match="SystemError.*stand-in for a bug"):
            client.batch_write([(b"big", os.urandom(400_000))])
        assert time.monotonic() - started < 10
        client.write(b"small", b"v")  # the connection keeps working
        assert client.read(b"small") == b"v" and client.read(b"big") is None
        assert writers == {thread.ident}, "replies must be written from the event-loop thread"
    finally:
        stop.set()
        thread.join(10)
        store.close()
