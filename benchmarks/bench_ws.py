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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from narrative_pipeline.store.ws_client import DataStoreWsClient  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## WebSocket"
REDIS_SOURCE = ["unknown"]
SERVER_PIDS: dict[tuple[str, int], int] = {}  # (host, port) -> pid of our server subprocesses


@dataclass
class Backend:
    """One thing under test: its three operations, plus the figures measured so far."""

    name: str
    batch_write: Callable
    batch_read: Callable
    read: Callable
    write_keys_s: float = 0.0
    read_rounds: list[float] = field(default_factory=list)
    single_rounds: list[float] = field(default_factory=list)
    server_pid: int | None = None  # our servers: CPU time per call is measured too
    batch_cpu_us: list[float] = field(default_factory=list)  # server CPU per 1,000 keys read
    single_cpu_us: list[float] = field(default_factory=list)  # server CPU per single read

    @property
    def read_keys_s(self) -> float:
        return statistics.median(self.read_rounds)

    @property
    def single_reads_s(self) -> float:
        return statistics.median(self.single_rounds) if self.single_rounds else 0.0


def server_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a server process so far (/proc; 0 when unknown)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_keys(n: int, seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    keys = np.frombuffer(rng.bytes(16 * n), dtype="V16").tolist()
    values = np.frombuffer(np.arange(n, dtype="<u8").tobytes(), dtype="V8").tolist()
    return keys, values


def time_writes(backend: Backend, keys: list[bytes], values: list[bytes], batch: int) -> None:
    started = time.perf_counter()
    for start in range(0, len(keys), batch):
        backend.batch_write(
            list(zip(keys[start : start + batch], values[start : start + batch], strict=True))
        )
    backend.write_keys_s = len(keys) / (time.perf_counter() - started)


def time_reads(
    backend: Backend, keys: list[bytes], values: list[bytes], batch: int, singles: int, seed: int
) -> None:
    n = len(keys)
    order = np.random.default_rng(seed).integers(0, n, size=n)
    batches = [[keys[i] for i in order[s : s + batch]] for s in range(0, n, batch)]
    started, cpu = time.perf_counter(), server_cpu_s(backend.server_pid)
    results = [backend.batch_read(b) for b in batches]
    backend.read_rounds.append(n / (time.perf_counter() - started))
    backend.batch_cpu_us.append((server_cpu_s(backend.server_pid) - cpu) / n * 1e9)
    expected = [values[i] for i in order[:batch]]
    assert results[0] == expected, f"{backend.name}: batch_read returned wrong values"
    if singles:
        sample = [keys[i] for i in order[:singles]]
        started, cpu = time.perf_counter(), server_cpu_s(backend.server_pid)
        for key in sample:
            backend.read(key)
        backend.single_rounds.append(singles / (time.perf_counter() - started))
        backend.single_cpu_us.append((server_cpu_s(backend.server_pid) - cpu) / singles * 1e6)


def run_all(
    backends: list[Backend], keys: list[bytes], values: list[bytes], args: argparse.Namespace
) -> None:
    """Writes once per backend, then `rounds` interleaved read rounds (the median is kept)."""
    for backend in backends:
        time_writes(backend, keys, values, args.batch)
    for round_no in range(args.rounds):
        for backend in backends:
            time_reads(backend, keys, values, args.batch, args.singles, seed=100 + round_no)
    for b in backends:
        rounds = ", ".join(f"{r:,.0f}" for r in b.read_rounds)
        print(
            f"{b.name:<40} write {b.write_keys_s:>11,.0f} keys/s  batch_read median {b.read_keys_s:>11,.0f} keys/s ({rounds})  read {b.single_reads_s:>8,.0f} calls/s{server_cpu_text(b)}",
            flush=True,
        )


def server_cpu_text(b: Backend) -> str:
    if b.server_pid is None:
        return ""
    return (
        f"  server CPU {statistics.median(b.batch_cpu_us):,.0f} us per 1,000 batch keys, "
        f"{statistics.median(b.single_cpu_us):,.0f} us per read"
    )


@contextlib.contextmanager
def store_server(path: Path, repo: Path = REPO_ROOT) -> Iterator[tuple[str, int]]:
    """Our server as a subprocess (the `store serve` command alone, logs to a file).

    `repo`: the checkout whose code runs (another worktree for a before/after comparison).
    """
    log = open(path.with_suffix(".log"), "wb")  # noqa: SIM115 - closed below
    env = dict(os.environ, PYTHONPATH=str(repo))
    process = subprocess.Popen(
        [sys.executable, "-m", "narrative_pipeline.store.serve", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=repo,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r"ws://([^:]+):(\d+)/ws", line)
        if not match:
            raise RuntimeError(f"server did not start: {line!r}; see {log.name}")
        address = match.group(1), int(match.group(2))
        SERVER_PIDS[address] = process.pid
        yield address
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
        REDIS_SOURCE[0] = "REDIS_URL (the server scripts/services.sh started)"
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError(
            "redis-server not installed and REDIS_URL unset (scripts/services.sh install)"
        )
    port = free_port()
    REDIS_SOURCE[0] = "a private redis-server on loopback, persistence off (REDIS_URL was unset)"
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


def write_results(
    backends: list[Backend], args: argparse.Namespace, elapsed: float, loads: tuple[str, str]
) -> None:
    redis_figures = backends[-1]
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/bench_ws.py --n {args.n}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()}, {os.cpu_count()} cores shared with other sessions, Python {platform.python_version()}; "
        f"whole run {elapsed:.0f} s).",
        f"{args.n:,} entries, 16-byte keys, 8-byte values, written in batches of {args.batch} (timed once); then "
        f"{args.rounds} interleaved rounds over the three backends of {args.n:,} random keys read in batches of "
        f"{args.batch} and {args.singles:,} single-key reads; the table gives each backend's median round. "
        "Loopback TCP, one synchronous client.",
        "",
        "| backend | batch_write keys/s | batch_read keys/s (median) | batch_read vs Redis | batch_read rounds | single read calls/s | server CPU (median) |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for b in backends:
        rounds = ", ".join(f"{r / 1000:,.0f}k" for r in b.read_rounds)
        lines.append(
            f"| {b.name} | {b.write_keys_s:,.0f} | {b.read_keys_s:,.0f} | {b.read_keys_s / redis_figures.read_keys_s:.2f}x | {rounds} | {b.single_reads_s:,.0f} |{server_cpu_text(b).replace('  server CPU ', ' ') or ' - '} |"
        )
    lines += [
        "",
        f"Redis: {REDIS_SOURCE[0]}. Our store appends to a file (no fsync); Redis keeps the data in memory.",
        f"Load average (1/5/15 min) before: {loads[0]}; after: {loads[1]}. Other sessions share the 2 cores, so",
        "single runs move by tens of percent; the interleaved rounds show the spread.",
        "Server: `python -m narrative_pipeline.store.serve` (the same code as `narrative-pipeline store serve`).",
        "",
    ]
    section = "\n".join(lines)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _m: section + "\n", text)
        if pattern.search(text)
        else text.rstrip("\n") + "\n\n" + section
    )
    RESULTS.write_text(text)
    print(f"wrote the WebSocket section of {RESULTS}")


def baseline_backends(
    stack: contextlib.ExitStack, workdir: Path, repo: Path | None
) -> list[Backend]:
    """Our client against the server of another checkout (none without --baseline-repo)."""
    if repo is None:
        return []
    commit = (
        subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or repo.name
    )  # a `git archive` export has no .git: its folder names it
    address = stack.enter_context(store_server(workdir / "baseline.bin", repo))
    client = DataStoreWsClient(*address)
    return [
        Backend(
            f"baseline server ({commit}) + our client",
            client.batch_write,
            client.batch_read,
            client.read,
            server_pid=SERVER_PIDS[address],
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="entries (default 1M)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved read rounds (median kept)"
    )
    parser.add_argument(
        "--singles", type=int, default=10_000, help="single-key reads timed per round"
    )
    parser.add_argument(
        "--no-results", action="store_true", help="print only; leave RESULTS.md alone"
    )
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        default=None,
        help="also serve from this checkout (e.g. a worktree of an older commit) in the same "
        "interleaved rounds, with our client, for a before/after comparison",
    )
    args = parser.parse_args(argv)
    import redis
    from simd_r_drive_ws_client import DataStoreWsClient as OfficialClient

    keys, values = make_keys(args.n)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_ws_") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        ours_at = stack.enter_context(store_server(workdir / "ours.bin"))
        official_at = stack.enter_context(store_server(workdir / "official.bin"))
        ours, official = DataStoreWsClient(*ours_at), OfficialClient(*official_at)
        rds = redis.Redis.from_url(stack.enter_context(redis_url(workdir)))
        rds.flushdb()
        stack.callback(rds.flushdb)
        backends = [
            Backend(
                "our server + our client",
                ours.batch_write,
                ours.batch_read,
                ours.read,
                server_pid=SERVER_PIDS[ours_at],
            ),
            Backend(
                "our server + official client 0.11.1a0",
                official.batch_write,
                official.batch_read,
                official.read,
                server_pid=SERVER_PIDS[official_at],
            ),
            *baseline_backends(stack, workdir, args.baseline_repo),
            Backend(
                f"Redis {rds.info()['redis_version']} (redis-py MSET/MGET/GET)",
                lambda items: rds.mset(dict(items)),
                rds.mget,
                rds.get,
            ),
        ]
        run_all(backends, keys, values, args)
    elapsed = time.perf_counter() - started
    redis_figures = backends[-1]
    for b in backends[:-1]:
        print(
            f"{b.name}: batch_read {b.read_keys_s / redis_figures.read_keys_s:.2f}x Redis, batch_write {b.write_keys_s / redis_figures.write_keys_s:.2f}x Redis"
        )
    if not args.no_results:
        write_results(
            backends, args, elapsed, (load_before, " ".join(f"{x:.2f}" for x in os.getloadavg()))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
