"""WebSocket store benchmark: our server with our client, with the official client, and Redis.

Workload (the engine's own benchmark shape): N entries, 16-byte keys, 8-byte values, written in
batches of 1024; then N random keys read back in batches of 1024 (batch_read / MGET); then a
sample of single-key reads. Each backend gets a fresh store (or a flushed Redis database).

    .venv/bin/python benchmarks/bench_ws.py                 # 1M entries, writes RESULTS.md
    .venv/bin/python benchmarks/bench_ws.py --n 100000 --no-results

Redis: REDIS_URL (as printed by scripts/services.sh start) or, when unset, a private
`redis-server` on a free loopback port with persistence off. Our store writes to a file
(no fsync) while Redis keeps everything in memory: the comparison favours Redis on writes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from narrative_pipeline.store.ws_client import DataStoreWsClient  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## WebSocket"


@dataclass
class Figures:
    name: str
    write_keys_s: float
    read_keys_s: float
    single_reads_s: float


def make_keys(n: int, seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype("<i8").tobytes()
    values = np.arange(n, dtype="<u8").tobytes()
    return [keys[i * 16 : i * 16 + 16] for i in range(n)], [
        values[i * 8 : i * 8 + 8] for i in range(n)
    ]


def run_workload(
    name: str,
    batch_write: Callable,
    batch_read: Callable,
    read: Callable,
    keys: list[bytes],
    values: list[bytes],
    batch: int,
    singles: int,
) -> Figures:
    n = len(keys)
    started = time.perf_counter()
    for start in range(0, n, batch):
        batch_write(
            list(zip(keys[start : start + batch], values[start : start + batch], strict=True))
        )
    write_s = time.perf_counter() - started

    order = np.random.default_rng(11).integers(0, n, size=n)
    batches = [[keys[i] for i in order[s : s + batch]] for s in range(0, n, batch)]
    started = time.perf_counter()
    results = [batch_read(b) for b in batches]
    read_s = time.perf_counter() - started
    check = order[:batch]
    assert results[0] == [values[i] for i in check], f"{name}: batch_read returned wrong values"

    sample = [keys[i] for i in order[:singles]]
    started = time.perf_counter()
    for key in sample:
        read(key)
    single_s = time.perf_counter() - started
    figures = Figures(name, n / write_s, n / read_s, singles / single_s if singles else 0.0)
    print(
        f"{name:<40} write {figures.write_keys_s:>12,.0f} keys/s   batch_read {figures.read_keys_s:>12,.0f} keys/s   read {figures.single_reads_s:>9,.0f} calls/s",
        flush=True,
    )
    return figures


@contextlib.contextmanager
def store_server(path: Path) -> Iterator[tuple[str, int]]:
    """Our server as a subprocess (the `store serve` command alone, logs to a file)."""
    log = open(path.with_suffix(".log"), "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "narrative_pipeline.store.server", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r"ws://([^:]+):(\d+)/ws", line)
        if not match:
            raise RuntimeError(f"server did not start: {line!r}; see {log.name}")
        yield match.group(1), int(match.group(2))
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError(
            "redis-server not installed and REDIS_URL unset (scripts/services.sh install)"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(30)


def bench_ours(
    workdir: Path, keys: list[bytes], values: list[bytes], args: argparse.Namespace
) -> Figures:
    with store_server(workdir / "ours.bin") as (host, port):
        client = DataStoreWsClient(host, port)
        return run_workload(
            "our server + our client",
            client.batch_write,
            client.batch_read,
            client.read,
            keys,
            values,
            args.batch,
            args.singles,
        )


def bench_official(
    workdir: Path, keys: list[bytes], values: list[bytes], args: argparse.Namespace
) -> Figures:
    from simd_r_drive_ws_client import DataStoreWsClient as OfficialClient

    with store_server(workdir / "official.bin") as (host, port):
        client = OfficialClient(host, port)
        return run_workload(
            "our server + official client 0.11.1a0",
            client.batch_write,
            client.batch_read,
            client.read,
            keys,
            values,
            args.batch,
            args.singles,
        )


def bench_redis(
    workdir: Path, keys: list[bytes], values: list[bytes], args: argparse.Namespace
) -> Figures:
    import redis

    with redis_url(workdir) as url:
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            return run_workload(
                f"Redis {client.info()['redis_version']} (redis-py MSET/MGET/GET)",
                lambda items: client.mset(dict(items)),
                client.mget,
                client.get,
                keys,
                values,
                args.batch,
                args.singles,
            )
        finally:
            client.flushdb()


def write_results(figures: list[Figures], args: argparse.Namespace, elapsed: float) -> None:
    redis = next(f for f in figures if f.name.startswith("Redis"))
    lines = [
        SECTION,
        "",
        f"`benchmarks/bench_ws.py --n {args.n}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work, Python {platform.python_version()}; run took {elapsed:.0f} s).",
        f"{args.n:,} entries, 16-byte keys, 8-byte values; writes in batches of {args.batch}; then {args.n:,} random keys "
        f"read in batches of {args.batch}; then {args.singles:,} single-key reads. Loopback TCP, one client.",
        "",
        "| backend | batch_write keys/s | batch_read keys/s | batch_read vs Redis | single read calls/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.name} | {f.write_keys_s:,.0f} | {f.read_keys_s:,.0f} | {f.read_keys_s / redis.read_keys_s:.2f}x | {f.single_reads_s:,.0f} |"
        )
    lines += [
        "",
        "Our store appends to a file (no fsync) while Redis runs in memory with persistence off.",
        "",
    ]
    section = "\n".join(lines)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(section + "\n", text)
        if pattern.search(text)
        else text.rstrip("\n") + "\n\n" + section
    )
    RESULTS.write_text(text)
    print(f"wrote the WebSocket section of {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="entries (default 1M)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--singles", type=int, default=20_000, help="single-key reads timed")
    parser.add_argument(
        "--no-results", action="store_true", help="print only; leave RESULTS.md alone"
    )
    args = parser.parse_args(argv)
    keys, values = make_keys(args.n)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_ws_") as tmp:
        workdir = Path(tmp)
        figures = [
            bench(workdir, keys, values, args)
            for bench in (bench_ours, bench_official, bench_redis)
        ]
    elapsed = time.perf_counter() - started
    redis = figures[-1]
    for f in figures[:-1]:
        print(
            f"{f.name}: batch_read {f.read_keys_s / redis.read_keys_s:.2f}x Redis, batch_write {f.write_keys_s / redis.write_keys_s:.2f}x Redis"
        )
    if not args.no_results:
        write_results(figures, args, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
