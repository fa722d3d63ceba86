"""simd-r-drive compatible key/value store: the embedded file engine, the WebSocket server and client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DataStore", "NamespaceHasher", "DataStoreWsClient"]

if TYPE_CHECKING:
    from narrative_pipeline.store.datastore import DataStore
    from narrative_pipeline.store.hashing import NamespaceHasher
    from narrative_pipeline.store.ws_client import DataStoreWsClient

_LAZY = {
    "DataStore": "narrative_pipeline.store.datastore",
    "NamespaceHasher": "narrative_pipeline.store.hashing",
    "DataStoreWsClient": "narrative_pipeline.store.ws_client",
}


def __getattr__(name: str) -> Any:
    # Lazy so that the embedded engine never pays for importing the WebSocket stack.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
