"""The issue-12 attacks on our store server, measured: memory growth and a good client's latency.

Starts our real server (subprocess, loopback) per case and reports the server's peak RSS growth
(VmHWM after the attack minus VmRSS before it) under: a 50 MiB ping; 300 unfinished 1 MiB calls
on one connection; four connections each sending 90 MiB of a 100 MiB frame -- with the defaults
and with `--max-message-mib 4` -- and a good client's write+read round trip while 1,100 silent
or half-open connections are held. The same attacks, with pass/fail bounds, are the tests in
narrative_pipeline_tests/test_store_server_limits.py (whose helpers this script reuses).

    .venv/bin/python benchmarks/bench_store_attacks.py
"""

from __future__ import annotations

import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from narrative_pipeline.store import muxio, websocket  # noqa: E402
from narrative_pipeline_tests import test_store_server_limits as attack  # noqa: E402

MIB = attack.MIB


def big_ping(server: attack.ServerProcess) -> list[socket.socket]:
    _status, sock = attack.upgrade(server)
    sock.sendall(websocket.frame_header(websocket.OP_PING, 50 * MIB, masked=True) + bytes(4))
    try:
        for _ in range(50):
            sock.sendall(bytes(MIB))
    except OSError:
        pass
    attack.close_code(sock, 3)
    return [sock]


def unfinished_calls(server: attack.ServerProcess) -> list[socket.socket]:
    _status, sock = attack.upgrade(server)
    payload = muxio.encode_rpc(muxio.MSG_CALL, 1, 1, b"") + bytes(MIB)
    try:
        for stream in range(300):
            frame = muxio.encode_frame(stream, 0, muxio.KIND_OPEN, payload)
            sock.sendall(attack.client_frame(websocket.OP_BINARY, frame))
    except OSError:
        pass
    attack.close_code(sock, 3)
    return [sock]


def big_partial_frames(server: attack.ServerProcess) -> list[socket.socket]:
    sockets = [attack.upgrade(server)[1] for _ in range(4)]
    attack._send_most_of_a_frame(list(sockets), 100 * MIB, 90 * MIB)
    time.sleep(0.5)
    return sockets


def held_connections(server: attack.ServerProcess) -> list[socket.socket]:
    held = []
    for i in range(1100):
        sock = socket.create_connection((server.host, server.port), timeout=10)
        if i % 2:
            sock.sendall(attack.HANDSHAKE.encode())
        held.append(sock)
    time.sleep(0.5)
    return held


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    cases = [
        ("50 MiB ping", big_ping),
        ("300 unfinished 1 MiB calls, one connection", unfinished_calls),
        ("4 connections x 90 MiB of a 100 MiB frame", big_partial_frames),
        ("1,100 silent / half-open connections held", held_connections),
    ]
    print("| server options | attack | server RSS growth | good client write+read | log lines |")
    print("|---|---|---:|---:|---:|")
    for options in ([], ["--max-message-mib", "4"]):
        for name, run in cases:
            with tempfile.TemporaryDirectory() as tmp, attack.serving(Path(tmp), *options) as srv:
                before = attack.rss_bytes(srv)
                sockets = run(srv)
                growth = (attack.rss_bytes(srv, "VmHWM") - before) / MIB
                latency = attack.good_client_round_trip(srv)
                for sock in sockets:
                    sock.close()
                lines = len(srv.log_text().splitlines())
                label = " ".join(options) or "defaults"
                print(
                    f"| {label} | {name} | {growth:.1f} MiB | {latency * 1000:.0f} ms | {lines} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
