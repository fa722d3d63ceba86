"""Durability (kill -9 of an fsyncing writer, in a loop) and the one-writer lock."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.errors import StoreLockedError

# Writes batches forever; prints "ack N" only after batch N's batch_write call returned.
WRITER = textwrap.dedent(
    """
    import os, sys
    from narrative_pipeline.store import DataStore
    from narrative_pipeline_tests.test_store_durability import batch
    path, first, big = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "big"
    with DataStore(path, fsync=not big) as store:
        print("ready", flush=True)
        n = first
        while True:
            store.batch_write(batch(n, big))
            os.write(1, b"ack %d\\n" % n)  # one write: a pipe never splits it
            n += 1
    """
)


def batch(n: int, big: bool = False) -> list[tuple[bytes, bytes]]:
    """Batch n: deterministic keys and payloads.

    Normal batches mix sizes up to 32 KiB. Big ones are 8 payloads of 2 MiB, cheap to make, so
    the writer spends most of its time inside the write syscall and a kill there leaves a torn
    tail (a SIGKILL stops a long write() between pages).
    """
    rng = random.Random(n)
    if big:
        return [(b"b%d-%d" % (n, j), (b"%d/%d|" % (n, j)) * (2 << 20 >> 4)) for j in range(8)]
    return [
        (b"b%d-%d" % (n, j), rng.randbytes(rng.choice([8, 100, 5000, 32768])) + b"!")
        for j in range(rng.randrange(5, 60))
    ]


def kill_writer(path: Path, first: int, big: bool, delay: float) -> list[int]:
    """Start a writer, kill -9 it `delay` seconds after it opened the store; return acked batches."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(first), "big" if big else "fsync"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Only newline-terminated lines count: a kill can land while a line is being written.
    complete_lines = proc.stdout.read().split("\n")[:-1]
    acked = [int(line.split()[1]) for line in complete_lines if line.startswith("ack ")]
    proc.stdout.close()
    return acked


def check_reopened(
    path: Path, acked: list[int], partial: dict[int, int], in_flight_no: int, big: bool
) -> bool:
    """Reopen as a writer; every acked batch is intact, the in-flight one is an intact prefix.

    Returns whether recovery had to cut a torn tail.
    """
    size_on_disk = path.stat().st_size
    with DataStore(path) as store:
        for n in acked:
            pairs = batch(n, big)
            assert store.batch_read([k for k, _ in pairs]) == [v for _, v in pairs], n
        in_flight = batch(in_flight_no, big)
        got = store.batch_read([k for k, _ in in_flight])
        present = [g is not None for g in got]
        assert present == sorted(present, reverse=True)
        assert all(g == v for g, (_, v) in zip(got, in_flight, strict=True) if g is not None)
        partial[in_flight_no] = sum(present)
        assert store.file_size() == path.stat().st_size
        assert len(store) == sum(len(batch(n, big)) for n in acked) + sum(partial.values())
        return store.file_size() != size_on_disk


@pytest.mark.slow
def test_kill_minus_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    """20 kills: 10 of a writer that fsyncs every batch into one growing file, 10 of a writer of
    big batches (fresh file each) to get kills inside a write and so torn tails to recover."""
    rng = random.Random(2024)
    durable = tmp_path / "durable.bin"
    acked: list[int] = []
    partial: dict[int, int] = {}
    next_batch = 0
    torn = 0
    for iteration in range(20):
        if iteration % 2 == 0:
            new = kill_writer(durable, next_batch, False, rng.uniform(0.0, 0.25))
            acked += new
            in_flight_no = new[-1] + 1 if new else next_batch
            torn += check_reopened(durable, acked, partial, in_flight_no, False)
            next_batch = in_flight_no + 1  # keys never repeat across writers
        else:
            path = tmp_path / f"big{iteration}.bin"
            new = kill_writer(path, 0, True, rng.uniform(0.0, 0.1))
            torn += check_reopened(path, new, {}, new[-1] + 1 if new else 0, True)
            path.unlink()
    assert len(acked) > 10  # the fsyncing writers did get work done between kills
    print(f"kill -9 loop: {len(acked)} acknowledged fsynced batches, {torn} torn tails recovered")


LOCK_PROBE = textwrap.dedent(
    """
    import os, sys
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.store.errors import StoreLockedError
    try:
        with DataStore(sys.argv[1], read_only=sys.argv[2] == "ro") as store:
            print("opened", store.read(b"k"))
    except StoreLockedError as exc:
        print("locked:", exc)
    """
)


def probe(path: Path, mode: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", LOCK_PROBE, str(path), mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    ).stdout.strip()


def test_second_writer_process_is_refused_readers_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "locked.bin"
    with DataStore(path) as store:
        store.write(b"k", b"v")
        out = probe(path, "rw")
        assert out.startswith("locked:") and str(path) in out and "read_only=True" in out
        assert probe(path, "ro") == "opened b'v'"
        with pytest.raises(StoreLockedError, match="already open for writing"):
            DataStore(path)  # a second handle in the same process is refused as well
        with DataStore(path, read_only=True) as reader:
            assert reader.read(b"k") == b"v"
    assert probe(path, "rw") == "opened b'v'"  # released on close
