"""Errors raised by the store; every message names the file and what to do about it."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for everything the store raises on purpose."""


class CorruptStoreError(StoreError):
    """The file is not a simd-r-drive store, or its entry chain is broken beyond automatic repair."""


class StoreLockedError(StoreError):
    """Another process (or another open handle) holds the writer lock on the file."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted through a store opened with `read_only=True`."""


class InvalidPayloadError(StoreError, ValueError):
    """A payload the on-disk format cannot represent (empty, or exactly b"\\x00")."""
