"""The zip helper process and this process overlap: the child's answers are read off its pipe
as they come (it never waits for the parent to ask for them), and this process parses members
itself while it would otherwise wait (readers/companyfacts_worker.py, pipe_worker.py)."""

from __future__ import annotations

import functools
import time
import zipfile
from pathlib import Path

import pytest

from narrative_pipeline.pipe_worker import PipeWorker
from narrative_pipeline.readers import companyfacts, companyfacts_worker


def _document(cik: int, n_facts: int) -> bytes:
    entries = ",".join(
        f'{{"end":"2020-12-31","val":{cik * 1000 + i},"accn":"a{i}","fy":2020,"fp":"FY",'
        f'"form":"10-K","filed":"2021-02-01"}}'
        for i in range(n_facts)
    )
    concepts = ",".join(
        f'"Concept{c}":{{"label":"x","units":{{"USD":[{entries}]}}}}' for c in range(4)
    )
    return f'{{"cik":{cik},"entityName":"E{cik}","facts":{{"us-gaap":{{{concepts}}}}}}}'.encode()


def _zip(tmp_path: Path, n_members: int, n_facts: int) -> Path:
    archive = tmp_path / "companyfacts.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for cik in range(1, n_members + 1):
            zf.writestr(f"CIK{cik:010d}.json", _document(cik, n_facts))
    return archive


def test_answers_larger_than_the_pipe_are_drained_without_being_asked_for(tmp_path: Path) -> None:
    archive = _zip(tmp_path, 6, 2000)  # each answer: 8,000 facts, well over a 64 KiB pipe
    read = companyfacts.read_zip_member
    setup = {"zip": str(archive), "taxonomy": None, "read": (read.__module__, read.__name__)}
    child = PipeWorker(companyfacts_worker.CHILD_MODULE, setup, "test worker", drain=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
        for name in names:
            child.ask(name)
        assert child.drained is not None
        deadline = time.monotonic() + 60
        while child.drained.qsize() < 1 + len(names) and time.monotonic() < deadline:
            time.sleep(0.05)
        # "ready" and every answer arrived while nobody called receive: the child never waited
        assert child.drained.qsize() == 1 + len(names)
        answers = [child.receive() for _ in names]
        assert [a.source for a in answers] == [f"{archive}!{n}" for n in names]
        assert all(a.fact_count == 8000 and not a.error for a in answers)
        assert not child.has_answer()
    finally:
        child.close()


def _small_window(monkeypatch: pytest.MonkeyPatch, ahead: int) -> None:
    """`ahead` members asked of the child at most, twice that read ahead in all."""
    monkeypatch.setattr(companyfacts_worker, "AHEAD", ahead)
    monkeypatch.setattr(companyfacts_worker, "WINDOW", 2 * ahead)


def _assert_read_in_order(archive: Path, read: companyfacts_worker.ReadMember) -> None:
    """read_members gives every member's result once, in member order (40 members of 200)."""
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        got = list(companyfacts_worker.read_members(archive, zf, members, None, read))
        expected = [companyfacts.read_zip_member(zf, m, archive, None) for m in members]
    assert [r.source for r in got] == [r.source for r in expected]
    assert [r.fact_count for r in got] == [r.fact_count for r in expected] == [200] * 40


def test_both_processes_parse_members_and_results_keep_member_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip(tmp_path, 40, 50)
    _small_window(monkeypatch, 4)
    here: list[str] = []

    @functools.wraps(companyfacts.read_zip_member)  # the child imports the original by name
    def counting(archive_: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, taxonomy):
        here.append(info.filename)
        return companyfacts.read_zip_member(archive_, info, path, taxonomy)

    _assert_read_in_order(archive, counting)
    # The child starts in ~0.5 s: this process read members meanwhile, the child the rest.
    assert 0 < len(here) < 40
    assert len(set(here)) == len(here)  # none read twice


def test_a_helper_killed_mid_run_hands_every_owed_member_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip(tmp_path, 40, 50)
    _small_window(monkeypatch, 6)
    received: list[int] = []

    class DiesAfterThree(PipeWorker):
        def receive(self):  # the child is killed with answers still owed
            if len(received) == 3:
                self.proc.kill()
                self.proc.wait()
            answer = super().receive()
            received.append(1)
            return answer

    monkeypatch.setattr(companyfacts_worker, "PipeWorker", DiesAfterThree)
    _assert_read_in_order(archive, companyfacts.read_zip_member)
    # Answers read off the pipe before the kill still count; then the child was found gone.
    assert 3 <= len(received) < 40 - 6


def test_stopping_early_stops_the_helper(tmp_path: Path) -> None:
    archive = _zip(tmp_path, 40, 50)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        results = companyfacts_worker.read_members(
            archive, zf, members, None, companyfacts.read_zip_member
        )
        first = next(results)
        children = _children()
        assert children, "no helper process started"
        results.close()  # the consumer stops (e.g. the writer failed): the helper is killed
    assert first.fact_count == 200
    deadline = time.monotonic() + 10
    while _children() & children and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children() & children


def _children() -> set[int]:
    """Live (not zombie) child processes of this one."""
    import os

    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = (task / "children").read_text().split()
        for pid in children:
            status = Path(f"/proc/{pid}/status")
            if status.exists() and "State:\tZ" not in status.read_text():
                pids.add(int(pid))
    return pids
