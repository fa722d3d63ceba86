"""Reading source files ahead of the database writer, with each read's exception captured.

Shared by ingest.py (thread prefetch) and csv_process.py (the worker process's head start and
fallback): one home for "read this item, or hand back what it raised", so a bad file or batch
is reported as failed by the writer instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

PREFETCH = 4  # reads running ahead of the writer


def capture(read: Callable[[Item], Result], item: Item) -> Result | Exception:
    """read(item), or the exception it raised (readers report bad content; this catches bugs/IO)."""
    try:
        return read(item)
    except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the run
        return exc


def prefetched(
    items: list[Item], read: Callable[[Item], Result], workers: int
) -> Iterator[tuple[Item, Result | Exception]]:
    """(item, read(item)) in order, with up to PREFETCH reads running ahead in threads.

    `read` returns a list (parsed in the thread) or a lazy iterator (consumed by the caller).
    """
    if workers <= 1:
        for item in items:
            yield item, capture(read, item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[tuple[Item, Future[Result | Exception]]] = []
        queue = iter(items)
        for item in queue:
            pending.append((item, pool.submit(capture, read, item)))
            if len(pending) >= PREFETCH:
                break
        while pending:
            item, future = pending.pop(0)
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(capture, read, nxt)))
            yield item, future.result()


def read_csv_batch(paths: list[Path], concepts: set[str] | None) -> tuple[list[tuple], Any]:
    """Fingerprints, then the files read together (the same code as the worker process)."""
    from narrative_pipeline.readers.csv_worker import read_csv_batch as read_batch

    return read_batch(paths, concepts)
