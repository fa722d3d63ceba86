"""Companyfacts documents parsed in a helper process, the members of a bulk zip or the files
of a folder: `python -m narrative_pipeline.readers.companyfacts_worker`.

Parsing a document (JSON, then columns) and the database write of the previous ones both hold
the GIL, so only a second process puts the second core to work (as readers/csv_worker.py does
for CSV batches, over pipe_worker.py). The child opens the same zip itself (or the files by
path); it is sent member names (paths) and answers each with what the read function returns
(a ReadResult, whose columns pickle cheaply), in order.

`_in_order` keeps up to AHEAD documents (AHEAD_BYTES of JSON) asked of the child, whose
answers a thread reads off the pipe as they come (`PipeWorker(drain=True)`), so the child
parses on while this process writes a batch. Whenever this process would wait for the child's
next answer, it parses the next document nobody has taken yet itself and keeps the result until
its turn (at most WINDOW documents past the one being yielded): neither process waits for the
other while work is left. If the child dies or an answer is cut, every document it still owed
is read in this process: results come back in order and none is lost or read twice.
NARRATIVE_INGEST_PROCESSES=0 turns the child off.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from narrative_pipeline.pipe_worker import (
    PipeWorker,
    WorkerGone,
    child_main,
    processes_enabled,
    requests,
    send,
)
from narrative_pipeline.readers.base import ReadResult

log = logging.getLogger(__name__)
# read_member(archive, info, zip path, taxonomy): companyfacts.read_zip_member, and
# read_file(path, taxonomy), passed in (and named to the child) rather than imported, so the
# two modules do not import each other.
ReadMember = Callable[[zipfile.ZipFile, zipfile.ZipInfo, Path, "set[str] | None"], ReadResult]
Answer = TypeVar("Answer")
ReadFile = Callable[[Path, "set[str] | None"], Answer]

MIN_MEMBERS = 24  # fewer: the child's start (~0.5 s) is not paid back
# Members asked of the child and not yet received, at most: by count and by their JSON bytes.
# Enough to keep it parsing while this process writes a batch of ingest.RESULT_BATCH_TICKERS
# (64) members (~55 MB of JSON on average): with less, this process runs out of answers after
# each batch and parses members itself while the child idles. Memory: the parsed results of
# ~128 MB of JSON (~20 MB) wait here at most, plus those read here ahead.
AHEAD = 256
AHEAD_BYTES = 128 << 20
WINDOW = 2 * AHEAD  # members past the one being yielded that may be read (here or there)
CHILD_MODULE = "narrative_pipeline.readers.companyfacts_worker"  # tests swap it for a dead one


def use_member_worker(n_members: int) -> bool:
    """A helper process pays with many members and a second core, unless turned off."""
    return processes_enabled() and n_members >= MIN_MEMBERS and (os.cpu_count() or 1) >= 2


def read_members(
    path: Path,
    archive: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    taxonomy: set[str] | None,
    read_zip_member: ReadMember,
) -> Iterator[ReadResult]:
    """Each member's ReadResult, in order, parsed by the child or here, whichever is free."""
    setup = {"zip": str(path), "taxonomy": taxonomy, "read": _named(read_zip_member)}
    yield from _in_order(
        setup,
        [m.filename for m in members],
        [m.file_size for m in members],
        lambda j: read_zip_member(archive, members[j], path, taxonomy),
        path.name,
    )


def read_files(
    paths: Sequence[Path], taxonomy: set[str] | None, read_file: ReadFile[Answer]
) -> Iterator[Answer]:
    """read_file(path, taxonomy) of each of `paths` (single documents), in order, by the child
    or here, whichever is free."""
    setup = {"zip": None, "taxonomy": taxonomy, "read": _named(read_file)}
    yield from _in_order(
        setup,
        [str(p) for p in paths],
        [_size(p) for p in paths],
        lambda j: read_file(paths[j], taxonomy),
        f"{len(paths)} companyfacts files",
    )


def _named(read: Callable[..., Any]) -> tuple[str, str]:
    """(module, name) the child imports `read` by."""
    return read.__module__, read.__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone: its read reports it
        return 0


def _in_order(
    setup: dict, names: list[str], sizes: list[int], read_here: Callable[[int], Any], what: str
) -> Iterator[Any]:
    """read(j) for j in order: asked of the child by names[j], or read_here(j) when this
    process would otherwise wait (see the module docstring)."""
    child = PipeWorker(CHILD_MODULE, setup, "companyfacts worker", drain=True)
    done_here: dict[int, Any] = {}  # read here (or received), not yielded yet
    n_here = 0
    asked_bytes = 0  # JSON bytes of the documents asked of the child, not yet received
    taken = 0  # documents [0, taken) are the child's or in done_here (or yielded)
    i = 0
    n = len(names)

    def take_here() -> None:
        nonlocal taken, n_here
        n_here += 1
        try:
            done_here[taken] = read_here(taken)
        except Exception as exc:  # noqa: BLE001 - raised in order, when its turn comes
            done_here[taken] = exc
        taken += 1

    try:
        while i < n:
            while taken < min(n, i + WINDOW) and child.outstanding < AHEAD:
                if child.outstanding and asked_bytes >= AHEAD_BYTES:
                    break
                child.ask(names[taken])
                asked_bytes += sizes[taken]
                taken += 1
            if i not in done_here:
                if not child.has_answer() and taken < min(n, i + WINDOW):
                    take_here()  # the child is busy: read a document nobody has taken yet
                    continue
                done_here[i] = child.receive()
                asked_bytes -= sizes[i]
            yield _result(done_here.pop(i))
            i += 1
    except WorkerGone as exc:
        log.warning("%s; reading %s from %s on here", exc, what, names[i])
        child.close(kill=True)
        for j in range(i, n):
            yield _result(done_here.pop(j)) if j in done_here else read_here(j)
    finally:
        child.close()  # killed if answers are still coming: nobody will read them
        log.info(
            "%s: %d of %d parsed in this process, the rest by the helper process", what, n_here, n
        )


def _result(done: Any) -> Any:
    """A document's result; the exception reading it raised (here, or in the child, which sends
    it back) is raised now, in order, as reading the document here would have raised it."""
    if isinstance(done, BaseException):
        raise done
    return done


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """In the child: answer member names (or file paths) until None or end of input."""
    init = pickle.load(inp)
    taxonomy = init["taxonomy"]
    module, name = init["read"]
    read = getattr(importlib.import_module(module), name)
    if init["zip"] is None:
        send(out, "ready")
        _answer_each(inp, out, lambda request: read(Path(request), taxonomy))
        return
    path = Path(init["zip"])
    with zipfile.ZipFile(path) as archive:
        send(out, "ready")
        _answer_each(
            inp, out, lambda request: read(archive, archive.getinfo(request), path, taxonomy)
        )


def _answer_each(inp: BinaryIO, out: BinaryIO, answer_to: Callable[[str], Any]) -> None:
    for request in requests(inp):
        try:
            answer: Any = answer_to(request)
        except Exception as exc:  # noqa: BLE001 - sent back, raised by the parent
            answer = exc
        send(out, answer)


if __name__ == "__main__":
    child_main(serve)
