"""Bad input gets a clear error and loses nothing already stored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from narrative_pipeline.store import DataStore
from narrative_pipeline.store.errors import (
    InvalidPayloadError,
    ReadOnlyStoreError,
    StoreError,
)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.bin"
    with DataStore(path) as store:
        store.batch_write([(b"keep%d" % i, b"value%d" % i) for i in range(10)])
    return path


def assert_unchanged(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    with DataStore(path, read_only=True) as store:
        assert store.batch_read([b"keep%d" % i for i in range(10)]) == [
            b"value%d" % i for i in range(10)
        ]


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda s: s.write(b"k", b""), InvalidPayloadError, "empty payload"),
        (lambda s: s.write(b"k", b"\x00"), InvalidPayloadError, "reserved for tombstones"),
        (lambda s: s.write("k", b"v"), TypeError, "key must be bytes, got str"),
        (lambda s: s.write(b"k", "v"), TypeError, "payload must be bytes, got str"),
        (lambda s: s.write(b"k", 5), TypeError, "payload must be bytes, got int"),
        (lambda s: s.write(b"k", None), TypeError, "payload must be bytes, got NoneType"),
        # A bad pair anywhere in a batch: nothing of the batch is written.
        (lambda s: s.batch_write([(b"a", b"1"), (b"b", b"")]), InvalidPayloadError, "item 1"),
        (lambda s: s.batch_write([(b"a", b"1"), (b"b", b"\x00")]), InvalidPayloadError, "item 1"),
        (lambda s: s.batch_write([(b"a", b"1"), (2, b"x")]), TypeError, "item 1: key"),
        (lambda s: s.batch_write([(b"a", b"1"), (b"b",)]), TypeError, "item 1 is not a"),
        (lambda s: s.batch_write({b"a": b"1"}), TypeError, "list of"),
        (lambda s: s.read("k"), TypeError, "key must be bytes"),
        (lambda s: s.batch_read([b"a", 7]), TypeError, "key 1"),
        (lambda s: s.batch_read(b"abc"), TypeError, "not a single key"),
        (lambda s: s.delete(None), TypeError, "key must be bytes"),
        (lambda s: s.exists(1.5), TypeError, "key must be bytes"),
    ],
)
def test_invalid_arguments(store_path: Path, call, error, message) -> None:
    before = store_path.read_bytes()
    with DataStore(store_path) as store, pytest.raises(error, match=message):
        call(store)
    assert_unchanged(store_path, before)


def test_invalid_payload_error_is_a_value_error() -> None:
    assert issubclass(InvalidPayloadError, ValueError) and issubclass(
        InvalidPayloadError, StoreError
    )


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        DataStore(tmp_path)
    with pytest.raises(StoreError, match="is a directory"):
        DataStore(tmp_path, read_only=True)


def test_missing_file_read_only(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store file"):
        DataStore(tmp_path / "nope.bin", read_only=True)
    assert not (tmp_path / "nope.bin").exists()


def test_read_only_file_opened_for_writing(store_path: Path) -> None:
    before = store_path.read_bytes()
    os.chmod(store_path, 0o444)
    try:
        with pytest.raises(StoreError, match="read-only on disk"):
            DataStore(store_path)
        with DataStore(store_path, read_only=True) as store:
            assert store.read(b"keep3") == b"value3"
            with pytest.raises(ReadOnlyStoreError, match="opened read-only"):
                store.write(b"k", b"v")
            with pytest.raises(ReadOnlyStoreError):
                store.delete(b"keep3")
            with pytest.raises(ReadOnlyStoreError):
                store.compact()
    finally:
        os.chmod(store_path, 0o644)
    assert_unchanged(store_path, before)


def test_parent_directories_are_created(tmp_path: Path) -> None:
    with DataStore(tmp_path / "a" / "b" / "s.bin") as store:
        store.write(b"k", b"v")
    assert (tmp_path / "a" / "b" / "s.bin").stat().st_size == 21  # 1-byte payload + metadata
