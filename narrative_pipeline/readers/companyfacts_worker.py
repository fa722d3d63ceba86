"""Members of a bulk companyfacts zip parsed in a helper process:
`python -m narrative_pipeline.readers.companyfacts_worker`.

Parsing a member (JSON, then frames) and the database write of the previous ones both hold the
GIL, so only a second process puts the second core to work (as readers/csv_worker.py does for
CSV batches, over pipe_worker.py). The child opens the same zip itself; it is sent member names
and answers each with the member's ReadResult (its columns pickle cheaply), in order.

`read_members` keeps up to AHEAD members (AHEAD_BYTES of JSON) asked of the child, whose answers a thread reads off the pipe
as they come (`PipeWorker(drain=True)`), so the child parses on while this process writes a batch.
Whenever this process would wait for the child's next answer, it parses the next member nobody
has taken yet itself and keeps the result until its turn (at most WINDOW members past the one
being yielded): neither process waits for the other while work is left. If the child dies or an
answer is cut, every member it still owed is read in this process: results come back in member
order and none is lost or read twice. NARRATIVE_INGEST_PROCESSES=0 turns the child off.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

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
# read_member(archive, info, zip path, taxonomy): companyfacts.read_zip_member, passed in (and
# named to the child) rather than imported, so the two modules do not import each other.
ReadMember = Callable[[zipfile.ZipFile, zipfile.ZipInfo, Path, "set[str] | None"], ReadResult]

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
    child = PipeWorker(
        CHILD_MODULE,
        {
            "zip": str(path),
            "taxonomy": taxonomy,
            "read": (read_zip_member.__module__, read_zip_member.__name__),
        },
        "companyfacts worker",
        drain=True,
    )
    read_here: dict[int, ReadResult | Exception] = {}  # members read here, not yielded yet
    n_here = 0
    asked_bytes = 0  # JSON bytes of the members asked of the child, not yet received
    taken = 0  # members [0, taken) are the child's or in read_here (or yielded)
    i = 0

    def take_here() -> None:
        nonlocal taken, n_here
        n_here += 1
        try:
            read_here[taken] = read_zip_member(archive, members[taken], path, taxonomy)
        except Exception as exc:  # noqa: BLE001 - raised in member order, when its turn comes
            read_here[taken] = exc
        taken += 1

    try:
        while i < len(members):
            while taken < min(len(members), i + WINDOW) and child.outstanding < AHEAD:
                if child.outstanding and asked_bytes >= AHEAD_BYTES:
                    break
                child.ask(members[taken].filename)
                asked_bytes += members[taken].file_size
                taken += 1
            if i not in read_here:
                if not child.has_answer() and taken < min(len(members), i + WINDOW):
                    take_here()  # the child is busy: read a member nobody has taken yet
                    continue
                read_here[i] = _answer(child.receive())
                asked_bytes -= members[i].file_size
            yield _result(read_here.pop(i))
            i += 1
    except WorkerGone as exc:
        log.warning("%s; reading %s from member %s on here", exc, path, members[i].filename)
        child.close(kill=True)
        for j in range(i, len(members)):
            done = read_here.pop(j, None)
            yield (
                _result(done)
                if done is not None
                else read_zip_member(archive, members[j], path, taxonomy)
            )
    finally:
        child.close()  # killed if answers are still coming: nobody will read them
        log.info(
            "%s: %d of %d members parsed in this process, the rest by the helper process",
            path.name,
            n_here,
            len(members),
        )


def _result(done: ReadResult | Exception) -> ReadResult:
    """A member's result, or the exception reading it raised, raised now (in member order)."""
    if isinstance(done, Exception):
        raise done
    return done


def _answer(answer: Any) -> ReadResult:
    """The child's ReadResult; an exception it caught is raised here, as reading the member
    in this process would have raised it."""
    if isinstance(answer, BaseException):
        raise answer
    return answer


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """In the child: answer member names until None or end of input."""
    init = pickle.load(inp)
    path, taxonomy = Path(init["zip"]), init["taxonomy"]
    module, name = init["read"]
    read_zip_member = getattr(importlib.import_module(module), name)
    with zipfile.ZipFile(path) as archive:
        send(out, "ready")
        for name in requests(inp):
            try:
                answer: Any = read_zip_member(archive, archive.getinfo(name), path, taxonomy)
            except Exception as exc:  # noqa: BLE001 - sent back, raised by the parent
                answer = exc
            send(out, answer)


if __name__ == "__main__":
    child_main(serve)
