"""The Protocols in store/protocol.py and db/protocol.py describe the real objects.

mypy checks DataStore, DataStoreWsClient and DbUsGaap against them statically (the `_conforms`
functions in the protocol modules); the official client is untyped, so its conformance is checked
here at run time, together with real instances of the others.
"""

from __future__ import annotations

from narrative_pipeline.db.protocol import FactsDatabase, FactSource, IngestTarget, TaxonomyWriter
from narrative_pipeline.store.protocol import KeyValueStore


def members(protocol: type) -> set[str]:
    # typing.get_protocol_members is Python 3.13+; typing_extensions (a dependency of dagster,
    # torch and SQLAlchemy) has it for 3.11.
    from typing_extensions import get_protocol_members

    return set(get_protocol_members(protocol))


def test_the_official_client_has_every_store_method():
    from simd_r_drive_ws_client import DataStoreWsClient as Official

    assert {"write", "batch_read", "batch_read_structured", "__len__"} <= members(KeyValueStore)
    missing = {name for name in members(KeyValueStore) if not hasattr(Official, name)}
    assert not missing
    assert not hasattr(Official, "len")  # `len(client)`, never `client.len()`


def test_our_store_and_client_are_key_value_stores(tmp_path):
    from narrative_pipeline.store import DataStore, DataStoreWsClient

    with DataStore(tmp_path / "s.bin") as store:
        assert isinstance(store, KeyValueStore)
    missing = {name for name in members(KeyValueStore) if not hasattr(DataStoreWsClient, name)}
    assert not missing


def test_db_us_gaap_is_every_database_protocol(tmp_path):
    from narrative_pipeline.db import DbUsGaap

    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        for protocol in (FactSource, IngestTarget, TaxonomyWriter, FactsDatabase):
            assert isinstance(db, protocol), protocol.__name__
    finally:
        db.close()


def test_a_store_missing_a_method_is_not_a_key_value_store():
    class ReadOnly:
        def read(self, key: bytes) -> bytes | None:
            return None

    assert not isinstance(ReadOnly(), KeyValueStore)
