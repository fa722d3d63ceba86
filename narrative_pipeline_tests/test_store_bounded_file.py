"""The store file stays bounded (issue 13 item 5): automatic, crash-safe compaction.

Rewriting the same keys (or writing a new generation and deleting the old one) must not grow
the file without bound; a kill -9 during compaction loses nothing; readers of the old file keep
working; a served file compacts too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.ws_client import DataStoreWsClient
from narrative_pipeline_tests.ws_fixtures import REPO_ROOT, start_store_server

KEYS = [f"cell-{i:06d}".encode() for i in range(4000)]


def _generation(round_: int) -> list[tuple[bytes, bytes]]:
    return [(key, f"{round_}:{i}".encode().ljust(200, b".")) for i, key in enumerate(KEYS)]


def test_ten_rounds_of_rewrites_keep_the_file_within_1_5x_live(tmp_path: Path) -> None:
    path = tmp_path / "gen.bin"
    with DataStore(path, compact_min_dead=64 * 1024) as store:
        for round_ in range(10):
            pairs = _generation(round_)
            for start in range(0, len(pairs), 500):
                store.batch_write(pairs[start : start + 500])
            assert store.file_size() <= 1.5 * store.live_bytes, round_
            assert store.live_bytes == _measured_live_bytes(path, store)
        assert store.read(KEYS[7]) == _generation(9)[7][1]
    assert path.stat().st_size <= 1.5 * len(KEYS) * 256


def test_generation_switch_with_deletes_then_compact_if_needed(tmp_path: Path) -> None:
    # What the us_gaap layer does: a new generation under new keys, then the old one deleted.
    path = tmp_path / "switch.bin"
    with DataStore(path, compact_ratio=None) as store:  # automatic off: only the explicit call
        for round_ in range(10):
            new = [(b"g%d-" % round_ + k, v) for k, v in _generation(round_)]
            store.batch_write(new)
            if round_:
                for key in KEYS:
                    store.delete(b"g%d-" % (round_ - 1) + key)
            assert store.dead_bytes() > 0 or round_ == 0
            store.compact_if_needed()  # default ratio 1.5
            assert store.file_size() <= 1.5 * store.live_bytes
        assert len(store) == len(KEYS)
        assert store.compact_if_needed() is None  # nothing dead left: no work


def test_automatic_compaction_triggers_on_deletes_too(tmp_path: Path) -> None:
    path = tmp_path / "deletes.bin"
    with DataStore(path, compact_min_dead=64 * 1024) as store:
        store.batch_write(_generation(0))
        for key in KEYS[: len(KEYS) * 3 // 4]:
            store.delete(key)
            assert store.file_size() <= 1.5 * store.live_bytes + 64 * 1024 + 300
        assert len(store) == len(KEYS) // 4
        assert store.read(KEYS[-1]) == _generation(0)[-1][1]


def test_readers_of_the_old_file_keep_working_or_reopen(tmp_path: Path) -> None:
    path = tmp_path / "readers.bin"
    with DataStore(path, compact_ratio=None) as writer:
        writer.batch_write(_generation(0))
        writer.batch_write(_generation(1))
        reader = DataStore(path, read_only=True)
        assert reader.read(KEYS[3]) == _generation(1)[3][1]
        writer.compact()
        writer.write(KEYS[3], b"after compaction")
        assert reader.read(KEYS[3]) == _generation(1)[3][1]  # its snapshot, still readable
        assert reader.reopen_if_replaced() is True
        assert reader.read(KEYS[3]) == b"after compaction"
        assert reader.reopen_if_replaced() is False
        reader.close()


_KILLED_MID_COMPACTION = textwrap.dedent(
    """
    import os, signal, sys
    from narrative_pipeline.store import DataStore, compaction
    path, where = sys.argv[1], sys.argv[2]
    store = DataStore(path, compact_ratio=None)
    for round_ in range(2):
        store.batch_write([(b"k%05d" % i, b"%d-%05d" % (round_, i) * 40) for i in range(20000)])
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    real_replace, real_write_all = os.replace, compaction.write_all
    if where == "copying":  # live entries written to the new file, not yet fsynced or renamed
        calls = []
        def write_all(*args):
            real_write_all(*args)
            calls.append(1)
            if len(calls) == 1:
                die()
        compaction.write_all = write_all
    elif where == "before-rename":
        os.replace = die
    elif where == "after-rename":
        os.replace = lambda a, b: (real_replace(a, b), die())
    store.compact()
    """
)


@pytest.mark.parametrize("where", ["copying", "before-rename", "after-rename"])
def test_a_kill_during_compaction_loses_nothing(tmp_path: Path, where: str) -> None:
    path = tmp_path / "killed.bin"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_COMPACTION, str(path), where], env=env, timeout=120
    )
    assert result.returncode == -signal.SIGKILL  # it really died inside compact()
    tmp = tmp_path / "killed.bin.compact-tmp"
    assert tmp.exists() == (where != "after-rename")
    with DataStore(path) as store:  # opening also removes the stale .compact-tmp
        values = store.batch_read([b"k%05d" % i for i in range(20000)])
    assert values == [b"1-%05d" % i * 40 for i in range(20000)]
    assert not tmp.exists()


@pytest.mark.timeout(120)
def test_a_served_file_compacts_itself(tmp_path: Path) -> None:
    path = tmp_path / "served.bin"
    server = start_store_server(path, full_cli=False)
    try:
        client = DataStoreWsClient(server.host, server.port, timeout=20.0, batch_timeout=30.0)
        sizes = []
        for round_ in range(10):
            client.batch_write(_generation(round_)[:2000])
            client.batch_write(_generation(round_)[2000:])
            sizes.append(client.file_size())
        assert client.read(KEYS[5]) == _generation(9)[5][1]
        live = len(KEYS) * 256  # 200-byte payload + 20 metadata, padded to 64: 256 a key
        assert max(sizes) <= 1.5 * live + (1 << 20), sizes  # default min dead: 1 MiB
        assert sizes[-1] < 3 * live, sizes
    finally:
        server.stop()


def _measured_live_bytes(path: Path, store: DataStore) -> int:
    """Live bytes as a fresh opener counts them (the running count must agree)."""
    del store
    with DataStore(path, read_only=True) as fresh:
        return fresh.live_bytes
