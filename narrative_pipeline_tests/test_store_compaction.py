"""Compaction keeps exactly the newest live entry of each key, and the CLI around it."""

from __future__ import annotations

import argparse
import random
import struct
from pathlib import Path

import xxhash

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.cli import register


def cli_main(argv: list[str]) -> int:
    """The `store` group as `narrative-pipeline` wires it, without importing the other groups
    (the top-level parser imports Dagster and torch, which takes seconds)."""
    parser = argparse.ArgumentParser(prog="narrative-pipeline")
    register(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def entry_hashes(data: bytes) -> list[int]:
    """Key hashes of every entry in file order, walking the chain from the end."""
    hashes = []
    tail = len(data)
    while tail:
        key_hash, prev, _crc = struct.unpack_from("<QQI", data, tail - 20)
        hashes.append(key_hash)
        tail = prev
    return hashes[::-1]


def make_history(path: Path) -> dict[bytes, bytes]:
    rng = random.Random(5)
    model: dict[bytes, bytes] = {}
    with DataStore(path) as store:
        for _ in range(40):
            batch = [
                (b"k%d" % rng.randrange(300), rng.randbytes(rng.randrange(2, 200)))
                for _ in range(50)
            ]
            store.batch_write(batch)
            model.update(batch)
            for _ in range(5):
                key = b"k%d" % rng.randrange(300)
                store.delete(key)
                model.pop(key, None)
    return model


def test_compaction_keeps_exactly_the_live_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    model = make_history(path)
    with DataStore(path) as store:
        before = store.file_size()
        result = store.compact()
        assert result.size_before == before and result.size_after == store.file_size()
        assert result.size_after < before and result.live_entries == len(model)
        keys = [b"k%d" % i for i in range(300)]
        assert store.batch_read(keys) == [model.get(k) for k in keys]
        store.write(b"after", b"compaction")  # still writable, appends after the new tail
    data = path.read_bytes()
    hashes = entry_hashes(data)
    assert len(hashes) == len(model) + 1  # no tombstones, no superseded copies
    assert sorted(hashes[:-1]) == sorted(xxhash.xxh3_64_intdigest(k) for k in model)
    with DataStore(path, read_only=True) as store:
        assert store.batch_read(list(model)) == list(model.values())
        assert store.read(b"after") == b"compaction"
    assert not (tmp_path / "s.bin.compact-tmp").exists()


def test_compacting_everything_deleted_gives_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    with DataStore(path) as store:
        store.batch_write([(b"a", b"1" * 3), (b"b", b"2" * 3)])
        store.delete(b"a")
        store.delete(b"b")
        store.compact()
        assert store.file_size() == 0 and store.is_empty()
        store.write(b"c", b"33")
    with DataStore(path) as store:
        assert store.read(b"c") == b"33" and len(store) == 1


def test_cli_check_and_compact(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.bin"
    model = make_history(path)
    size = path.stat().st_size
    assert cli_main(["store", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"live keys: {len(model)}" in out and "status: OK" in out
    assert "CRC failures: 0" in out

    with path.open("ab") as handle:
        handle.write(b"\x13" * 77)
    assert cli_main(["store", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "torn/garbage tail: 77 bytes" in out and "--recover" in out
    assert path.stat().st_size == size + 77  # check alone never writes
    assert cli_main(["store", "check", "--recover", str(path)]) == 0
    assert path.stat().st_size == size

    assert cli_main(["store", "compact", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"size before: {size} bytes" in out
    assert f"{len(model)} live entries" in out
    assert path.stat().st_size < size


def test_cli_check_reports_crc_failures_in_old_entries(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.bin"
    with DataStore(path) as store:
        for i in range(50):
            store.write(b"k%d" % i, b"payload-%d" % i)  # small: checked vectorised
        big_at = store.file_size() + (-store.file_size() % 64)
        store.write(b"big", b"B" * 300)  # large: checked with zlib
        store.delete(b"k1")
        for i in range(50, 60):
            store.write(b"k%d" % i, b"payload-%d" % i)
    data = bytearray(path.read_bytes())
    data[64 * 3] ^= 1  # a payload byte of the 4th entry
    data[big_at + 7] ^= 1
    path.write_bytes(bytes(data))
    assert cli_main(["store", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "CRC failures: 2 (entries ending at [" in out and "entries: 62 (1 tombstones)" in out
    assert path.read_bytes() == bytes(data)


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert cli_main(["store", "check", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().out
    junk = tmp_path / "junk.bin"
    junk.write_bytes(random.Random(2).randbytes(3000))
    assert cli_main(["store", "check", str(junk)]) == 1
    assert "not a simd-r-drive store" in capsys.readouterr().out
    assert cli_main(["store", "compact", str(tmp_path / "missing.bin")]) == 1
