"""Opening torn, garbage-tailed and damaged files: every fully written entry comes back."""

from __future__ import annotations

import logging
import os
import random
import struct
import time
import zlib
from pathlib import Path

import pytest
import xxhash

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.errors import CorruptStoreError


def build_store(path: Path) -> tuple[dict[bytes, bytes], int]:
    """A store whose entries hold small integers (which look like metadata); returns the
    contents before the last entry and the offset where the last entry starts."""
    with DataStore(path) as store:
        store.write(b"first", struct.pack("<Q", 0))
        store.batch_write([(b"n%d" % i, struct.pack("<QQ", i, 25)) for i in range(6)])
        store.delete(b"n3")
        store.write(b"mid", b"m" * 70)
        before_last = store.file_size()
        # The last payload imitates metadata whose prev_offset points at real entry ends and
        # at 0: a chain-only check would accept such a cut and lose intact entries.
        fake = struct.pack("<QQI", 1, before_last, 0) + struct.pack("<QQI", 2, 0, 0)
        store.write(b"last", fake + struct.pack("<QQI", 3, 25, 0))
    expected = {b"first": struct.pack("<Q", 0), b"mid": b"m" * 70}
    expected.update({b"n%d" % i: struct.pack("<QQ", i, 25) for i in range(6) if i != 3})
    return expected, before_last


def assert_contents(path: Path, expected: dict[bytes, bytes], absent: list[bytes]) -> None:
    with DataStore(path, read_only=True) as store:
        keys = list(expected) + absent
        assert store.batch_read(keys) == list(expected.values()) + [None] * len(absent)
        assert len(store) == len(expected)


def test_cut_at_every_byte_of_the_last_entry(tmp_path: Path, caplog) -> None:
    source = tmp_path / "full.bin"
    expected, last_start = build_store(source)
    data = source.read_bytes()
    for cut in range(last_start, len(data)):
        path = tmp_path / f"cut{cut}.bin"
        path.write_bytes(data[:cut])
        with caplog.at_level(logging.WARNING), DataStore(path) as store:
            assert store.file_size() == last_start, f"cut at {cut}"
            assert store.read(b"last") is None
        assert path.stat().st_size == last_start  # the writer truncated the torn tail
        if cut > last_start:
            assert "torn write or trailing garbage" in caplog.text
        assert_contents(path, expected, [b"last", b"n3"])
        caplog.clear()
        path.unlink()
    full = dict(expected)
    full[b"last"] = data[last_start + (-last_start % 64) : len(data) - 20]
    assert_contents(source, full, [b"n3"])


@pytest.mark.parametrize(
    "garbage",
    [
        os.urandom(1),
        os.urandom(19),
        os.urandom(5000),
        bytes(300),  # zero fill, like a file extended by a crash
        struct.pack("<QQI", 7, 0, 0),  # fake metadata pointing at 0
        b"\x00" + struct.pack("<QQI", 7, 10, zlib.crc32(b"\x00")),  # fake tombstone
    ],
    ids=["1 random", "19 random", "5000 random", "zeros", "fake meta", "fake tombstone"],
)
def test_garbage_appended_is_cut_off(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "s.bin"
    expected, _ = build_store(path)
    with DataStore(path, read_only=True) as store:
        expected[b"last"] = store.read(b"last")
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(garbage)
    with DataStore(path, read_only=True) as store:  # readers serve the valid prefix...
        assert store.file_size() == size
    assert path.stat().st_size == size + len(garbage)  # ...and never modify the file
    with DataStore(path) as store:
        assert store.file_size() == size
    assert path.stat().st_size == size
    assert_contents(path, expected, [b"n3"])


def test_corrupt_last_payload_drops_only_that_entry(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    expected, last_start = build_store(path)
    data = bytearray(path.read_bytes())
    data[last_start + (-last_start % 64) + 3] ^= 0xFF  # flip a byte of the last payload
    path.write_bytes(bytes(data))
    with DataStore(path) as store:
        assert store.file_size() == last_start
    assert_contents(path, expected, [b"last"])


def test_bad_crc_before_good_entries_is_reported_not_cut(tmp_path: Path, caplog) -> None:
    """Damage followed by intact entries is not a torn tail: keep everything, say so."""
    path = tmp_path / "s.bin"
    with DataStore(path) as store:
        store.batch_write([(b"a%d" % i, b"x" * 8) for i in range(10)])
        batch_start = store.file_size()
        store.batch_write([(b"b%d" % i, b"y" * 8) for i in range(10)])
    data = bytearray(path.read_bytes())
    entry5 = batch_start + (-batch_start % 64) + 5 * 64
    data[entry5] = ord("z")
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), DataStore(path) as store:
        assert store.file_size() == len(data)
        assert store.read(b"b9") == b"y" * 8 and store.read(b"a0") == b"x" * 8
    assert "fail their CRC-32" in caplog.text
    assert path.read_bytes() == bytes(data)


@pytest.mark.parametrize(
    "content",
    [bytes(1 << 20), (b"\x05" + bytes(7)) * (1 << 17), bytes(range(256)) * 4096],
    ids=["zeros", "small ints", "byte ramp"],
)
def test_non_store_patterns_are_refused_quickly(tmp_path: Path, content: bytes) -> None:
    """Patterns whose bytes look like small offsets must not make the backward scan crawl."""
    path = tmp_path / "pattern.bin"
    path.write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(CorruptStoreError, match="not a simd-r-drive store"):
        DataStore(path)
    assert time.perf_counter() - started < 20
    assert path.read_bytes() == content


def test_random_bytes_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    content = random.Random(1).randbytes(100_000)
    path.write_bytes(content)
    with pytest.raises(CorruptStoreError, match="not a simd-r-drive store"):
        DataStore(path)
    with pytest.raises(CorruptStoreError, match="not a simd-r-drive store"):
        DataStore(path, read_only=True)
    assert path.read_bytes() == content
    # The lock was released on failure: a later writer may open (and still be refused).
    with pytest.raises(CorruptStoreError):
        DataStore(path)


def test_large_garbage_tail_beyond_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    with DataStore(path) as store:
        store.write(b"k", b"value")
    with path.open("ab") as handle:
        handle.write(os.urandom(4096))
    with pytest.raises(CorruptStoreError, match="store check --recover"):
        DataStore(path, max_recover_bytes=1024)
    assert path.stat().st_size == 25 + 4096
    with DataStore(path, max_recover_bytes=None) as store:
        assert store.read(b"k") == b"value"
    assert path.stat().st_size == 25


def test_broken_link_in_middle_recovers_prefix_only_when_asked(tmp_path: Path) -> None:
    """A corrupted prev_offset deep in the file is not a torn tail: no silent cut by default."""
    path = tmp_path / "s.bin"
    with DataStore(path) as store:
        for i in range(2000):
            store.write(b"k%d" % i, b"v" * 100)  # 128 bytes per entry
    data = bytearray(path.read_bytes())
    meta_of_entry_10 = 10 * 128 + 100
    data[meta_of_entry_10 + 8 : meta_of_entry_10 + 16] = struct.pack("<Q", 12345)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError):
        DataStore(path, max_recover_bytes=64 << 10)
    assert path.read_bytes() == bytes(data)
    with DataStore(path, max_recover_bytes=None) as store:
        assert len(store) == 10  # entries 0..9 precede the broken link
        assert store.read(b"k9") == b"v" * 100


def test_hash_collision_free_index_matches_scan(tmp_path: Path) -> None:
    """Index built at open equals a plain scan of the chain (newest entry wins)."""
    path = tmp_path / "s.bin"
    rng = random.Random(11)
    with DataStore(path) as store:
        for _ in range(50):
            store.batch_write(
                [
                    (b"%d" % rng.randrange(500), rng.randbytes(rng.randrange(2, 90)))
                    for _ in range(40)
                ]
            )
            store.delete(b"%d" % rng.randrange(500))
    data = path.read_bytes()
    newest: dict[int, bytes | None] = {}
    tail = len(data)
    while tail:
        key_hash, prev, _crc = struct.unpack_from("<QQI", data, tail - 20)
        if key_hash not in newest:
            meta_at = tail - 20
            if meta_at - prev == 1 and data[prev] == 0:
                newest[key_hash] = None
            else:
                newest[key_hash] = data[prev + (-prev % 64) : meta_at]
        tail = prev
    with DataStore(path, read_only=True) as store:
        keys = [b"%d" % i for i in range(500)]
        by_hash = {xxhash.xxh3_64_intdigest(k): k for k in keys}
        assert store.batch_read(keys) == [newest.get(xxhash.xxh3_64_intdigest(k)) for k in keys]
        assert len(store) == sum(1 for h, v in newest.items() if v is not None and h in by_hash)
