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

# Writes batches forever with fsync on; prints "ack N" only after batch N's call returned.
WRITER = textwrap.dedent(
    """
    import sys
    from narrative_pipeline.store import DataStore
    from narrative_pipeline_tests.test_store_durability import batch
    path, first = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    with DataStore(path, fsync=True) as store:
        n = first
        while True:
            store.batch_write(batch(n))
            print("ack", n, flush=True)
            n += 1
    """
)


def batch(n: int) -> list[tuple[bytes, bytes]]:
    """Batch n: deterministic keys and payloads of mixed sizes (up to 32 KiB) so writes take time."""
    rng = random.Random(n)
    return [
        (b"b%d-%d" % (n, j), rng.randbytes(rng.choice([8, 100, 5000, 32768])) + b"!")
        for j in range(rng.randrange(5, 60))
    ]


def kill_writer_after_random_delay(path: Path, first: int, rng: random.Random) -> list[int]:
    """Start a writer, kill -9 it at a random moment after it got going; return acked batches."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(first)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.0, 0.25))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked = [
        int(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith("ack")
    ]
    proc.stdout.close()
    return acked


@pytest.mark.slow
def test_kill_minus_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    path = tmp_path / "durable.bin"
    rng = random.Random(2024)
    acked: list[int] = []
    partial: dict[int, int] = {}  # batch in flight at a kill -> how many of its entries survived
    next_batch = 0
    for _iteration in range(20):
        new = kill_writer_after_random_delay(path, next_batch, rng)
        acked += new
        in_flight_no = new[-1] + 1 if new else next_batch
        with DataStore(path) as store:  # reopening recovers (and truncates) any torn tail
            for n in acked:
                pairs = batch(n)
                assert store.batch_read([k for k, _ in pairs]) == [v for _, v in pairs], n
            # The batch in flight when killed: a prefix of it may be there, each entry intact.
            in_flight = batch(in_flight_no)
            got = store.batch_read([k for k, _ in in_flight])
            present = [g is not None for g in got]
            assert present == sorted(present, reverse=True)
            assert all(g == v for g, (_, v) in zip(got, in_flight, strict=True) if g is not None)
            partial[in_flight_no] = sum(present)
            assert store.file_size() == path.stat().st_size
            assert len(store) == sum(len(batch(n)) for n in acked) + sum(partial.values())
        next_batch = in_flight_no + 1  # keys never repeat across writers
    assert len(acked) > 20  # the writers did get work done between kills


LOCK_PROBE = textwrap.dedent(
    """
    import sys
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
