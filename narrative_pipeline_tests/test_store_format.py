"""The embedded store against the simd-r-drive format reference and the official client's API."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import pytest
import xxhash

from narrative_pipeline.store import DataStore, NamespaceHasher
from narrative_pipeline.store.hashing import key_hash


def meta(key: bytes, prev: int, payload: bytes) -> bytes:
    """Metadata written independently of the implementation, straight from the reference."""
    return struct.pack("<QQI", xxhash.xxh3_64_intdigest(key), prev, zlib.crc32(payload))


def test_worked_example_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "example.bin"
    with DataStore(path) as store:
        store.write(b"alice", b"hello")
        store.write(b"bob", b"xyz123")
        store.delete(b"alice")
        assert store.file_size() == 111
    expected = (
        b"hello"
        + meta(b"alice", 0, b"hello")
        + bytes(39)
        + b"xyz123"
        + meta(b"bob", 25, b"xyz123")
        + b"\x00"
        + meta(b"alice", 90, b"\x00")
    )
    data = path.read_bytes()
    assert len(data) == 111
    assert data == expected
    assert data[21:25] == bytes.fromhex("86a61036")
    assert data[107:111] == bytes.fromhex("8def02d2")


HASH_VECTORS = {
    b"": 0x2D06800538D394C2,
    b"\x00": 0xC44BDFF4074EECDB,
    b"alice": 0x4DA10DD61A0116B0,
    b"bob": 0x1403C0C40F49B8E5,
    b"carol": 0xE2FDB994AD3FCBA4,
    b"key1": 0x384D070CD5D829E2,
    b"test_key": 0xE0614CC5ECBEED92,
    b"longer_key_name": 0x4C21BC57C3B572EE,
}


@pytest.mark.parametrize("key,expected", HASH_VECTORS.items())
def test_key_hash_vectors(key: bytes, expected: int) -> None:
    assert key_hash(key) == expected


def test_namespace_hasher_vectors() -> None:
    assert NamespaceHasher(b"namespace1").namespace(b"key1").hex() == (
        "7c066c9df2e6eccbe229d8d50c074d38"
    )
    assert NamespaceHasher(b"namespace2").namespace(b"key1").hex() == (
        "8d563a5c3c35166ce229d8d50c074d38"
    )
    with pytest.raises(TypeError):
        NamespaceHasher(b"ns").namespace("text")  # type: ignore[arg-type]


def test_namespace_hasher_matches_official_client() -> None:
    official = pytest.importorskip("simd_r_drive_ws_client")
    for prefix, key in [(b"a", b"b"), (b"", b""), (b"users", b"user123")]:
        ours = NamespaceHasher(prefix).namespace(key)
        assert ours == official.NamespaceHasher(prefix).namespace(key)


def test_api_semantics(tmp_path: Path) -> None:
    with DataStore(tmp_path / "s.bin") as store:
        assert store.is_empty() and len(store) == 0 and store.file_size() == 0
        assert store.read(b"missing") is None
        store.write(b"k", b"v1")
        store.write(b"k", b"v2")  # overwrite
        assert store.read(b"k") == b"v2" and len(store) == 1
        store.delete(b"nope")  # deleting a missing key does nothing
        size = store.file_size()
        store.delete(b"nope")
        assert store.file_size() == size
        store.batch_write([(b"a", b"1"), (b"b", b"22"), (b"a", b"333")])  # last pair wins
        assert store.batch_read([b"a", b"zz", b"b", b"k"]) == [b"333", None, b"22", b"v2"]
        assert b"a" in store and b"zz" not in store and store.exists(b"b")
        assert store.batch_read_structured({"x": b"a", "y": b"zz"}) == {"x": b"333", "y": None}
        assert store.batch_read_structured([{"p": b"k"}, {"q": b"b"}]) == [
            {"p": b"v2"},
            {"q": b"22"},
        ]
        store.delete(b"a")
        assert store.read(b"a") is None and b"a" not in store and len(store) == 2
        store.write(b"a", b"back")  # a deleted key can be written again
        assert store.read(b"a") == b"back" and len(store) == 3
        assert store.batch_read([]) == []
        assert store.read(bytearray(b"k")) == b"v2"  # any bytes-like key
        assert store.file_size() == (tmp_path / "s.bin").stat().st_size


def test_tombstones_and_overwrites_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    rng = random.Random(7)
    model: dict[bytes, bytes] = {}
    with DataStore(path) as store:
        for round_no in range(30):
            batch = []
            for _ in range(rng.randrange(1, 300)):
                key = b"key-%d" % rng.randrange(2000)
                value = rng.randbytes(rng.choice([1, 8, 8, 8, 44, 45, 100, 3000]))
                if value == b"\x00":
                    value = b"\x01"
                batch.append((key, value))
                model[key] = value
            store.batch_write(batch)
            for _ in range(rng.randrange(0, 40)):
                key = b"key-%d" % rng.randrange(2000)
                store.delete(key)
                model.pop(key, None)
            if round_no % 10 == 0:
                store.write(b"single-%d" % round_no, b"s")
                model[b"single-%d" % round_no] = b"s"
    with DataStore(path, read_only=True) as store:
        assert len(store) == len(model)
        keys = [b"key-%d" % i for i in range(2000)] + list(model)
        assert store.batch_read(keys) == [model.get(k) for k in keys]
        assert all(store.read(k) == model.get(k) for k in keys[:300])


def test_fixed_size_batches_open_through_vectorised_walk(tmp_path: Path) -> None:
    """Many equal-size entries (the fast path) mixed with odd sizes and tombstones."""
    path = tmp_path / "s.bin"
    keys = [b"%016d" % i for i in range(20_000)]
    with DataStore(path) as store:
        for start in range(0, len(keys), 1024):
            store.batch_write([(k, k[-8:]) for k in keys[start : start + 1024]])
            store.write(b"odd-%d" % start, b"x" * (start % 97 + 2))
        for k in keys[::1000]:
            store.delete(k)
    with DataStore(path) as store:
        expected = [None if i % 1000 == 0 else k[-8:] for i, k in enumerate(keys)]
        assert store.batch_read(keys) == expected
        assert len(store) == 20_000 - 20 + 20


def test_many_keys_grow_the_index(tmp_path: Path) -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(16) for _ in range(60_000)]
    with DataStore(tmp_path / "s.bin") as store:
        for start in range(0, len(keys), 5000):
            store.batch_write([(k, k[:8]) for k in keys[start : start + 5000]])
        sample = rng.sample(keys, 3000) + [b"absent-%d" % i for i in range(100)]
        assert store.batch_read(sample) == [k[:8] if len(k) == 16 else None for k in sample]
        assert len(store) == len(set(keys))


def test_close_and_context_manager(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "s.bin")
    store.write(b"k", b"v")
    store.close()
    store.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        store.write(b"k", b"v")
    with DataStore(tmp_path / "s.bin") as again:  # the lock was released
        assert again.read(b"k") == b"v"


def test_vectorised_hash_of_16_byte_keys_matches_xxhash() -> None:
    from narrative_pipeline.store.hashing import hash_keys

    rng = random.Random(9)
    keys = [rng.randbytes(16) for _ in range(3000)] + [bytes(16), b"\xff" * 16]
    keys += [NamespaceHasher(b"ns").namespace(b"%d" % i) for i in range(100)]
    assert hash_keys(keys).tolist() == [xxhash.xxh3_64_intdigest(k) for k in keys]
    mixed = [rng.randbytes(rng.choice([15, 16, 17])) for _ in range(500)]
    assert hash_keys(mixed).tolist() == [xxhash.xxh3_64_intdigest(k) for k in mixed]
    with pytest.raises(TypeError, match="key 70: key must be bytes, got str"):
        hash_keys([bytes(16)] * 70 + ["x" * 16])
