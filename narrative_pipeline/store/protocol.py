"""`KeyValueStore`: the simd-r-drive client API that the layers above the store rely on.

Three objects satisfy it: the embedded `DataStore`, our `DataStoreWsClient`, and the official
`simd_r_drive_ws_client.DataStoreWsClient`. Code above `store/` takes a `KeyValueStore` and calls
nothing outside it (no `compact`, no `close`: the official client has neither contract), so any
of the three can be passed in. Parameters are positional-only because the three name them
differently (`write(key, payload)` vs `write(key, data)`); write methods return `object`
because `DataStore` returns the new tail offset and the clients return None.

`len(store)` is the number of live keys; there is no `store.len()` method (the official client
raises AttributeError for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable


@runtime_checkable
class KeyValueStore(Protocol):
    """Byte keys to byte values, with batched calls (one round trip each over WebSocket)."""

    def write(self, key: bytes, value: bytes, /) -> object: ...

    def batch_write(self, items: list[tuple[bytes, bytes]], /) -> object: ...

    def read(self, key: bytes, /) -> bytes | None: ...

    def batch_read(self, keys: list[bytes], /) -> list[bytes | None]: ...

    def batch_read_structured(
        self, data: dict[Any, bytes] | list[dict[Any, bytes]], /
    ) -> dict[Any, bytes | None] | list[dict[Any, bytes | None]]: ...

    def exists(self, key: bytes, /) -> bool: ...

    def delete(self, key: bytes, /) -> object: ...

    def is_empty(self) -> bool: ...

    def file_size(self) -> int: ...

    def __len__(self) -> int: ...


if TYPE_CHECKING:
    from narrative_pipeline.store.datastore import DataStore
    from narrative_pipeline.store.ws_client import DataStoreWsClient

    def _conforms(embedded: DataStore, client: DataStoreWsClient) -> list[KeyValueStore]:
        return [embedded, client]  # mypy checks here that both satisfy the Protocol


__all__ = ["KeyValueStore"]
