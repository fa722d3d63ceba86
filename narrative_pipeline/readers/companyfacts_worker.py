"""Members of a bulk companyfacts zip parsed in a helper process:
`python -m narrative_pipeline.readers.companyfacts_worker`.

Parsing a member (JSON, then frames) and the database write of the previous one both hold the
GIL, so only a second process puts the second core to work (as readers/csv_worker.py does for
CSV batches, over pipe_worker.py). The child opens the same zip itself; it is sent member names
and answers each with the member's ReadResult (frames pickle cheaply), in order.

The parent (`read_members`) reads the first HEAD_START members itself while the child starts
(~0.5 s of imports), keeps at most AHEAD members asked of it, and reads the next member itself
whenever it had to wait for the child, so neither side idles for long. If the child dies or an
answer is cut, every member from that one on is read in this process: results come back in
member order and none is lost or read twice. NARRATIVE_INGEST_PROCESSES=0 turns the child off.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import time
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
HEAD_START = 4  # members read here while the child starts
AHEAD = 2  # members asked of the child at once
WAITED_S = 0.02  # waited longer for the child: the next member is read here
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
    """Each member's ReadResult, in order, some parsed by the child process."""
    child = PipeWorker(
        CHILD_MODULE,
        {
            "zip": str(path),
            "taxonomy": taxonomy,
            "read": (read_zip_member.__module__, read_zip_member.__name__),
        },
        "companyfacts worker",
    )
    asked = 0  # members [i, asked) not read here are the child's, asked in order
    here = set(range(min(HEAD_START, len(members))))
    take_next = False
    i = 0
    try:
        while i < len(members):
            while asked < len(members) and child.outstanding < AHEAD:
                if asked in here or take_next:
                    here.add(asked)
                    take_next = False
                else:
                    child.ask(members[asked].filename)
                asked += 1
            if i in here:
                result = read_zip_member(archive, members[i], path, taxonomy)
            else:
                started = time.perf_counter()
                result = _answer(child.receive())
                take_next = time.perf_counter() - started > WAITED_S
            i += 1
            yield result
    except WorkerGone as exc:
        log.warning("%s; reading %s from member %s on here", exc, path, members[i].filename)
        child.close(kill=True)
        for info in members[i:]:
            yield read_zip_member(archive, info, path, taxonomy)
    finally:
        child.close()  # killed if answers are still coming: nobody will read them


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
