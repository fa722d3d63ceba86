"""A bulk companyfacts zip is written a batch of members per transaction (us_gaap/ingest.py
`_ResultBatch`): the same stored facts as member by member, a refused member keeps its stored
data while the others of its batch are written, a ticker seen twice ends as the later one, and
the tickers' content stamps let an update re-materialise only the members whose content changed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.us_gaap import ingest


def _fact(val: float, accn: str, end: str) -> dict:
    return {"val": val, "accn": accn, "end": end, "fy": 2024, "fp": "FY", "form": "10-K",
            "filed": "2025-02-01"}  # fmt: skip


def _document(cik: int, accns: list[str], scale: float = 1.0) -> str:
    units = {
        "USD": [_fact(scale * (cik * 100 + k), a, f"202{k}-12-31") for k, a in enumerate(accns)]
    }
    facts = {"us-gaap": {"Assets": {"units": units}, "Revenues": {"units": units}}}
    return json.dumps({"cik": cik, "entityName": f"Co {cik}", "facts": facts})


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def _members(n: int, scale: float = 1.0) -> dict[str, str]:
    return {
        f"CIK{cik:010d}.json": _document(cik, [f"A{cik}-1", f"A{cik}-2"], scale)
        for cik in range(1, n + 1)
    }


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "RESULT_BATCH_TICKERS", 2)  # 5 members -> 3 transactions


def test_batched_zip_stores_what_member_by_member_stores(
    tmp_path: Path, small_batches: None
) -> None:
    members = _members(5)
    batched = DbUsGaap(f"sqlite:///{tmp_path / 'batched.sqlite'}")
    report = ingest.load_companyfacts(_zip(tmp_path / "companyfacts.zip", members), batched)
    assert report.files_loaded == 1 and not report.skipped_files
    assert report.facts_written == 5 * 4
    one_by_one = DbUsGaap(f"sqlite:///{tmp_path / 'single.sqlite'}")
    for name, text in members.items():
        (tmp_path / name).write_text(text)
        ingest.load_companyfacts(tmp_path / name, one_by_one)
    assert batched.facts_frame().equals(one_by_one.facts_frame())
    assert batched.filings_frame().equals(one_by_one.filings_frame())
    assert batched.source_file_unchanged(tmp_path / "companyfacts.zip")


def test_a_refused_member_keeps_its_data_and_its_batch_neighbours_are_written(
    tmp_path: Path, small_batches: None
) -> None:
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    path = _zip(tmp_path / "companyfacts.zip", _members(3))
    ingest.load_companyfacts(path, db)
    before = db.facts_frame()
    changed = _members(3, scale=2.0)
    changed["CIK0000000002.json"] = _document(2, ["A2-1"], scale=2.0)  # drops filing A2-2
    path.unlink()
    _zip(path, changed)
    report = ingest.load_companyfacts(path, db)
    assert [s.path for s in report.skipped_files] == [f"{path}!CIK0000000002.json"]
    assert "would drop 1 of the 2 filings" in report.skipped_files[0].reason
    after = db.facts_frame()
    kept = after[after["ticker"] == "CIK0000000002"].reset_index(drop=True)
    assert kept.equals(before[before["ticker"] == "CIK0000000002"].reset_index(drop=True))
    for ticker in ("CIK0000000001", "CIK0000000003"):  # same batch or the next: written
        new = after.loc[after["ticker"] == ticker, "value"].to_numpy()
        old = before.loc[before["ticker"] == ticker, "value"].to_numpy()
        assert (new == 2 * old).all()
    assert report.facts_written == 8
    assert not db.source_file_unchanged(path)  # a failed member: the zip is read again next time


def test_a_ticker_twice_in_one_zip_ends_as_its_later_member(
    tmp_path: Path, small_batches: None
) -> None:
    members = {
        "a/CIK0000000001.json": _document(1, ["A1-1", "A1-2"]),
        "b/CIK0000000001.json": _document(1, ["A1-1", "A1-2"], scale=3.0),
    }
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    report = ingest.load_companyfacts(_zip(tmp_path / "companyfacts.zip", members), db)
    assert not report.skipped_files
    assert sorted(db.facts_frame()["value"].tolist()) == [300.0, 300.0, 303.0, 303.0]


@pytest.mark.parametrize("batch", [64, 1])
def test_only_the_member_whose_content_changed_is_rematerialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """db/ticker_state.py: the whole zip is written again, but only one member's values
    changed. One batch (64): SQLite hands the same filing ids back to every member, so ids
    cannot tell the changed member; one member per transaction (1): every member gets new
    ids, so ids would call all of them changed. The content stamp finds exactly the one."""
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap import incremental
    from narrative_pipeline.us_gaap_store import UsGaapStore
    from narrative_pipeline_tests.test_us_gaap_store_incremental import OPTIONS

    monkeypatch.setattr(incremental, "FULL_BUILD_SHARE", 0.6)  # 1 of 3 tickers: incremental
    monkeypatch.setattr(ingest, "RESULT_BATCH_TICKERS", batch)
    db = DbUsGaap(f"sqlite:///{tmp_path / 'facts.sqlite'}")
    path = _zip(tmp_path / "companyfacts.zip", _members(3))
    data_store = DataStore(str(tmp_path / "store.bin"))
    store = UsGaapStore(data_store)
    store.ingest_companyfacts(path, db, downstream=False)
    store.build_from_db(db, **OPTIONS)
    ids_before = db._query("SELECT ticker, accn, id FROM filing ORDER BY id")
    members = _members(3)
    members["CIK0000000002.json"] = _document(2, ["A2-1", "A2-2"], scale=5.0)  # values only
    path.unlink()
    _zip(path, members)
    store.ingest_companyfacts(path, db, downstream=False)
    ids_after = db._query("SELECT ticker, accn, id FROM filing ORDER BY id")
    assert (ids_after == ids_before) == (batch == 64)
    report = store.update_from_db(db, **OPTIONS)
    assert report.messages[-1] == "incremental: 1 tickers added or changed, 0 removed"
    cells = store.read_cell_range(0, store.get_triplet_count())
    assert sorted(cells.unscaled.tolist()) == sorted(db.facts_frame()["value"].tolist())
    store.ingest_companyfacts(path, db, downstream=False)  # unchanged file: not read
    assert store.update_from_db(db, **OPTIONS).messages[-1] == "incremental: no ticker changed"
    data_store.close()
