"""Verified reads: a bit flipped anywhere in a store file never comes back as wrong bytes.

Every read checks the entry's CRC-32 (issue 12 item 4). A flip in a payload raises
`CorruptStoreError` naming the entry's offset; a flip in a chain link is caught at open (the file
is refused or its damaged tail is cut); a flip in a key-hash field makes that key unreachable
(the format's CRC covers payloads only, so that case reads as "missing", never as other bytes).
The server answers such a read with an error status instead of the bytes.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from xxhash import xxh3_64_intdigest

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.errors import CorruptStoreError, StoreError
from narrative_pipeline.store.ws_client import DataStoreWsClient
from narrative_pipeline_tests.ws_fixtures import start_store_server

SMALL = {f"small-{i}".encode(): f"v{i:07d}".encode() for i in range(300)}  # 8 bytes: table CRC
MIXED = {f"mixed-{i}".encode(): bytes([i % 251]) * (1 + 37 * i % 700) + b"!" for i in range(60)}
EXPECTED = {**SMALL, **MIXED}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "pristine.bin"
    with DataStore(path) as store:
        store.batch_write(list(SMALL.items()))
        store.batch_write(list(MIXED.items()))
    return path


def _flipped_copy(pristine: Path, target: Path, position: int, bit: int) -> None:
    shutil.copyfile(pristine, target)
    with open(target, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


def _check_no_wrong_bytes(store: DataStore) -> str:
    """Read every key one by one and in one batch; returns what happened, asserts no wrong bytes."""
    outcomes = set()
    for key, value in EXPECTED.items():
        try:
            got = store.read(key)
        except CorruptStoreError as exc:
            assert "fails its CRC-32" in str(exc) and "byte" in str(exc)
            outcomes.add("error")
            continue
        assert got in (value, None), f"read({key!r}) returned wrong bytes"
        outcomes.add("ok" if got == value else "missing")
    keys = list(EXPECTED)
    try:
        values = store.batch_read(keys)
    except CorruptStoreError:
        outcomes.add("batch-error")
    else:
        for key, got in zip(keys, values, strict=True):
            assert got in (EXPECTED[key], None), f"batch_read returned wrong bytes for {key!r}"
    return ",".join(sorted(outcomes))


def test_every_read_path_refuses_a_flipped_payload(pristine: Path, tmp_path: Path) -> None:
    with DataStore(pristine, read_only=True) as store:
        meta = store._index.get(xxh3_64_intdigest(b"small-7"))
    target = tmp_path / "one.bin"
    _flipped_copy(pristine, target, meta - 3, 0)  # inside the 8-byte payload of small-7
    with DataStore(target, read_only=True) as store:
        with pytest.raises(CorruptStoreError, match=f"metadata starts at byte {meta}"):
            store.read(b"small-7")
        with pytest.raises(CorruptStoreError, match=f"byte {meta}"):
            store.batch_read([b"small-1", b"small-7"])
        assert store.read(b"small-8") == SMALL[b"small-8"]
        with pytest.raises(CorruptStoreError):
            list(store.iter_live_entries())


def test_bit_flips_anywhere_never_return_wrong_bytes(pristine: Path, tmp_path: Path) -> None:
    size = pristine.stat().st_size
    rng = random.Random(12)
    positions = sorted(rng.sample(range(size), 250))
    target = tmp_path / "flipped.bin"
    seen: dict[str, int] = {}
    for position in positions:
        _flipped_copy(pristine, target, position, rng.randrange(8))
        try:
            store = DataStore(target, read_only=True)
        except StoreError:
            seen["refused at open"] = seen.get("refused at open", 0) + 1
            continue
        with store:
            outcome = _check_no_wrong_bytes(store)
        seen[outcome] = seen.get(outcome, 0) + 1
    # The flips must have exercised the CRC path, not only harmless padding.
    assert sum(n for outcome, n in seen.items() if "error" in outcome) >= 50, seen


def test_server_answers_an_error_instead_of_corrupt_bytes(pristine: Path, tmp_path: Path) -> None:
    with DataStore(pristine, read_only=True) as store:
        meta = store._index.get(xxh3_64_intdigest(b"mixed-5"))
    target = tmp_path / "served.bin"
    _flipped_copy(pristine, target, meta - 1, 3)
    server = start_store_server(target, full_cli=False)
    try:
        with DataStoreWsClient(server.host, server.port, timeout=20.0) as client:
            with pytest.raises(OSError, match="fails its CRC-32"):
                client.read(b"mixed-5")
            with pytest.raises(OSError, match="fails its CRC-32"):
                client.batch_read([b"small-1", b"mixed-5"])
            assert client.read(b"mixed-4") == MIXED[b"mixed-4"]  # the connection still serves
        assert server.alive()
    finally:
        server.stop()


@pytest.mark.parametrize("length", [8, 13, 24, 64, 100, 5000])
@pytest.mark.parametrize("count", [1, 2, 7, 8])
def test_batch_check_catches_one_flip_for_every_payload_shape(
    tmp_path: Path, length: int, count: int
) -> None:
    # Equal-length batches take the aggregate check (word or byte path); long ones zlib's.
    path = tmp_path / "shape.bin"
    pairs = [(b"k%d" % i, bytes([(i * 7 + j) % 256 for j in range(length)])) for i in range(count)]
    with DataStore(path) as store:
        store.batch_write(pairs)
        store.write(b"after", b"the batch")  # damage at the very end is handled at open instead
        metas = [store._index.get(xxh3_64_intdigest(k)) for k, _ in pairs]
    keys = [k for k, _ in pairs]
    with DataStore(path, read_only=True) as store:
        assert store.batch_read(keys) == [v for _, v in pairs]
    victim = count // 2
    _flipped_copy(path, tmp_path / "bad.bin", metas[victim] - 1 - length // 3, 5)
    bad = DataStore(tmp_path / "bad.bin", read_only=True)
    with bad, pytest.raises(CorruptStoreError, match=f"byte {metas[victim]}"):
        bad.batch_read(keys)
