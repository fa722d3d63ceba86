"""A CSV batch reader process: `python -m narrative_pipeline.readers.csv_worker`.

Parsing and SQLite writes both hold the GIL, so a thread cannot parse while the ingesting
process writes; this process can (narrative_pipeline/us_gaap/csv_process.py drives it, as a
pipe_worker child). It imports only the readers (~0.3 s), not the database, store or sklearn
modules.

Protocol: the parent sends {"concepts": set | None, "read": (module, function)}; the worker
answers "ready"; then for each list of paths it sends back read(paths, concepts): the files'
fingerprints (taken before the read) and the `read_sec_fetcher_csvs` batch (its reports are
frameless FileReports), or the exception the read raised. None or end of
input stops it.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any, BinaryIO

from narrative_pipeline.pipe_worker import child_main, requests, send
from narrative_pipeline.readers.sec_fetcher_batch import read_sec_fetcher_csvs


def file_fingerprints(paths: list[Path]) -> list[Any]:
    """(size, mtime, sha) of each file, None for one that cannot be read (the reader reports
    it). Taken before the read, so an edit made while reading shows up as a change next run."""
    from narrative_pipeline.db.fingerprint import file_fingerprint

    fingerprints: list[Any] = []
    for path in paths:
        try:
            fingerprints.append(file_fingerprint(path))
        except OSError:
            fingerprints.append(None)
    return fingerprints


def read_csv_batch(paths: list[Path], concepts: set[str] | None) -> tuple[list, Any]:
    """Fingerprints first, then the files read together (`read_sec_fetcher_csvs`)."""
    fingerprints = file_fingerprints(paths)
    return fingerprints, read_sec_fetcher_csvs(paths, concepts)


def read_for_transfer(paths: list[Path], concepts: set[str] | None) -> Any:
    """In the worker: `read_csv_batch` (fingerprints, then the batch) with light reports, or
    the exception it raised (a bad file is reported per file by the reader; this catches bugs
    and I/O errors, as the in-process path does)."""
    try:
        fingerprints, batch = read_csv_batch(paths, concepts)
    except Exception as exc:  # noqa: BLE001 - sent back, reported for the batch's files
        return exc
    return fingerprints, batch


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer batches until None or end of input."""
    init = pickle.load(inp)
    module, name = init["read"]
    read = getattr(importlib.import_module(module), name)
    concepts = init["concepts"]
    send(out, "ready")
    for paths in requests(inp):
        send(out, read(paths, concepts))


if __name__ == "__main__":
    child_main(serve)
