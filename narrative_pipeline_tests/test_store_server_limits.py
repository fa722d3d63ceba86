"""The store server holds under attack (issue 12 item 5): each attack of the issue, as a test.

Our real server runs as a subprocess on loopback; attacks are bounded loops. Memory growth is
the server's peak RSS (VmHWM) after the attack minus its RSS before it, an upper bound.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from narrative_pipeline.store import muxio, websocket
from narrative_pipeline.store.ws_client import DataStoreWsClient
from narrative_pipeline_tests.ws_fixtures import ServerProcess, start_store_server

MIB = 1024 * 1024
HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = start_store_server(tmp_path / "store.bin", extra_args=list(args), full_cli=False)
    try:
        yield server
    finally:
        server.stop()


def rss_bytes(server: ServerProcess, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for the server")


def upgrade(
    server: ServerProcess, extra: str = "", *, head: str = HANDSHAKE
) -> tuple[str, socket.socket]:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall((head + extra + "\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n", 1)[0].decode(), sock


def client_frame(opcode: int, payload: bytes) -> bytes:
    return websocket.encode_frame(opcode, payload, mask=True)


def close_code(sock: socket.socket, deadline_s: float = 10.0) -> int | None:
    """Read until the server's close frame (its code) or EOF (None)."""
    sock.settimeout(deadline_s)
    buf = bytearray()
    with contextlib.suppress(OSError):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            frame = websocket.parse_frame(buf, 0)
            while frame is not None:
                _fin, opcode, payload, end = frame
                if opcode == websocket.OP_CLOSE:
                    return struct.unpack("!H", payload[:2])[0]
                del buf[:end]
                frame = websocket.parse_frame(buf, 0)
    return None


def good_client_round_trip(server: ServerProcess) -> float:
    started = time.monotonic()
    with DataStoreWsClient(server.host, server.port, timeout=5.0) as client:
        client.write(b"good", b"client")
        assert client.read(b"good") == b"client"
    return time.monotonic() - started


# ---- handshake ---------------------------------------------------------------------------
def test_browser_origins_are_refused_unless_allowed(tmp_path: Path) -> None:
    with serving(tmp_path, "--allow-origin", "https://ok.example") as server:
        status, sock = upgrade(server, "Origin: http://evil.example\r\n")
        assert " 403 " in status
        sock.close()
        status, sock = upgrade(server, "Origin: https://ok.example\r\n")
        assert " 101 " in status
        sock.close()
        status, sock = upgrade(server)  # programs send no Origin
        assert " 101 " in status
        sock.close()
        assert good_client_round_trip(server) < 5
        assert "Origin 'http://evil.example' is not allowed" in server.log_text()


def test_version_and_connection_headers_are_checked(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        status, sock = upgrade(server, head=HANDSHAKE.replace("Version: 13", "Version: 8"))
        assert " 426 " in status
        sock.close()
        status, sock = upgrade(
            server, head=HANDSHAKE.replace("Connection: Upgrade", "Connection: keep-alive")
        )
        assert " 426 " in status
        sock.close()
        status, sock = upgrade(server, head=HANDSHAKE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"))
        assert " 400 " in status
        sock.close()
        status, sock = upgrade(
            server, head=HANDSHAKE.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade")
        )
        assert " 101 " in status  # a token list is fine (browsers send this)
        sock.close()


def test_allow_from_refuses_other_peers(tmp_path: Path) -> None:
    with serving(tmp_path, "--allow-from", "10.0.0.0/8") as server, pytest.raises(OSError):
        DataStoreWsClient(server.host, server.port, timeout=3.0)
    with serving(tmp_path, "--allow-from", "10.0.0.0/8,127.0.0.1") as server:
        assert good_client_round_trip(server) < 5


# ---- memory ------------------------------------------------------------------------------
def test_a_50_mib_ping_is_refused_not_echoed(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        before = rss_bytes(server)
        status, sock = upgrade(server)
        assert " 101 " in status
        header = websocket.frame_header(websocket.OP_PING, 50 * MIB, masked=True) + b"\0\0\0\0"
        sock.sendall(header)
        with contextlib.suppress(OSError):
            for _ in range(50):  # the server stops reading once it has refused the header
                sock.sendall(bytes(MIB))
        assert close_code(sock) in (1002, None)
        sock.close()
        assert rss_bytes(server, "VmHWM") - before < 64 * MIB
        assert good_client_round_trip(server) < 5


def test_300_unfinished_calls_on_one_connection_stay_bounded(tmp_path: Path) -> None:
    with serving(tmp_path, "--max-message-mib", "4") as server:
        before = rss_bytes(server)
        status, sock = upgrade(server)
        assert " 101 " in status
        payload = muxio.encode_rpc(muxio.MSG_CALL, 1, 1, b"") + bytes(MIB)
        closed = False
        for stream in range(300):
            frame = muxio.encode_frame(stream, 0, muxio.KIND_OPEN, payload)  # Open, never End
            try:
                sock.sendall(client_frame(websocket.OP_BINARY, frame))
            except OSError:
                closed = True
                break
        code = close_code(sock)
        sock.close()
        assert closed or code == 1009
        assert rss_bytes(server, "VmHWM") - before < 64 * MIB
        assert "unfinished calls on one connection" in server.log_text()
        assert good_client_round_trip(server) < 5


def _send_most_of_a_frame(sockets: list[socket.socket], frame_bytes: int, send_bytes: int) -> None:
    for sock in sockets:
        sock.sendall(
            websocket.frame_header(websocket.OP_BINARY, frame_bytes, masked=True) + b"abcd"
        )
    chunk = bytes(MIB)
    for _ in range(send_bytes // MIB):  # round-robin, as four attackers at once would
        for sock in list(sockets):
            try:
                sock.sendall(chunk)
            except OSError:
                sockets.remove(sock)


def test_four_big_partial_frames_with_a_small_message_cap(tmp_path: Path) -> None:
    with serving(tmp_path, "--max-message-mib", "4") as server:
        before = rss_bytes(server)
        sockets = [upgrade(server)[1] for _ in range(4)]
        _send_most_of_a_frame(sockets, 100 * MIB, 90 * MIB)
        assert rss_bytes(server, "VmHWM") - before < 64 * MIB
        assert good_client_round_trip(server) < 5
        for sock in sockets:
            sock.close()


def test_four_big_partial_frames_stay_within_the_global_budget(tmp_path: Path) -> None:
    # Defaults except a smaller budget, so the budget (not the message cap) is what holds.
    with serving(tmp_path, "--memory-budget-mib", "128") as server:
        before = rss_bytes(server)
        sockets = [upgrade(server)[1] for _ in range(4)]
        _send_most_of_a_frame(sockets, 100 * MIB, 90 * MIB)
        growth = rss_bytes(server, "VmHWM") - before
        assert growth < 128 * MIB * 1.25, growth / MIB  # bytearray growth slack
        assert len(sockets) < 4  # at least one attacker was cut off
        assert "memory budget" in server.log_text()
        assert good_client_round_trip(server) < 5
        for sock in sockets:
            sock.close()


# ---- connections -------------------------------------------------------------------------
@pytest.fixture
def many_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2400:
        pytest.skip(f"needs 2,400 descriptors for 1,100 client sockets; hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096) if hard > 0 else 4096, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_good_client_is_served_while_1100_connections_are_held(
    tmp_path: Path, many_descriptors: None
) -> None:
    with serving(tmp_path, "--max-connections", "1000") as server:
        held: list[socket.socket] = []
        try:
            for i in range(1100):
                sock = socket.create_connection((server.host, server.port), timeout=10)
                if i % 2:  # half send a partial handshake (half-open), half nothing (silent)
                    sock.sendall(HANDSHAKE.encode())
                held.append(sock)
            time.sleep(0.5)
            elapsed = good_client_round_trip(server)
            assert elapsed < 1.0, elapsed
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.5)
        log = server.log_text()
        assert len(log.splitlines()) < 200, len(log.splitlines())  # rate-limited, not 90k lines
        assert "Traceback" not in log
        assert "were not logged" in log or "evicted" in log


def test_handshake_and_idle_timeouts(tmp_path: Path) -> None:
    with serving(tmp_path, "--handshake-timeout", "1", "--idle-timeout", "2") as server:
        silent = socket.create_connection((server.host, server.port), timeout=10)
        status, idle = upgrade(server)
        assert " 101 " in status
        started = time.monotonic()
        silent.settimeout(10)
        assert silent.recv(1) == b""  # closed for not finishing the handshake
        assert time.monotonic() - started < 5
        assert close_code(idle) is None  # dropped (aborted) once idle for 2 s
        assert time.monotonic() - started < 8
        silent.close()
        idle.close()
        assert good_client_round_trip(server) < 5


# ---- the pieces, in-process ----------------------------------------------------------------
def test_allow_from_parsing_and_matching() -> None:
    from narrative_pipeline.store.limits import ServerLimits, parse_networks

    limits = ServerLimits(allow_from=parse_networks("10.0.0.0/8, 127.0.0.1,::1"))
    assert limits.peer_allowed("10.1.2.3") and limits.peer_allowed("127.0.0.1")
    assert limits.peer_allowed("::ffff:10.9.9.9")  # IPv4-mapped, as a dual-stack socket reports
    assert limits.peer_allowed("::1") and not limits.peer_allowed("192.168.1.1")
    assert not limits.peer_allowed("not-an-address")
    assert ServerLimits().peer_allowed("203.0.113.9")  # no --allow-from: everyone
    with pytest.raises(ValueError, match="'10.0.0.300/8' is not an address"):
        parse_networks("10.0.0.300/8")


def test_a_bad_allow_from_stops_the_command_with_a_message(tmp_path: Path, capsys) -> None:
    from narrative_pipeline.store.serve import main

    assert main([str(tmp_path / "s.bin"), "--allow-from", "nonsense"]) == 2
    assert "--allow-from: 'nonsense'" in capsys.readouterr().err


def test_quiet_log_writes_a_burst_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from narrative_pipeline.store.limits import QuietLog

    quiet = QuietLog(logging.getLogger("quiet-test"), burst=3, window=0.2)
    with caplog.at_level(logging.INFO, logger="quiet-test"):
        for i in range(1000):
            quiet.warning("same", "problem %d", i)
        quiet.warning("other", "another kind still gets through")
        time.sleep(0.25)
        quiet.warning("same", "after the window")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["problem 0", "problem 1", "problem 2"]
    assert "another kind still gets through" in messages
    assert "997 more 'same' messages" in " ".join(messages)
    assert messages[-1] == "after the window" and len(messages) == 6
    for _ in range(10):
        quiet.warning("same", "more")
    time.sleep(0.25)
    quiet.flush()  # the server calls it every second: counts are reported without a next event
    assert (
        caplog.records[-1].getMessage().startswith("8 more 'same' messages")
    )  # 11 in the window, 3 written
