"""CSV ingestion in batches: same database as one file at a time, bad files isolated."""

from __future__ import annotations

from pathlib import Path

import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.us_gaap import ingest


def _facts(db: DbUsGaap) -> list[list]:
    return db.facts_frame().values.tolist()


def write_mixed_folder(csvs: Path) -> Path:
    """Sample tickers plus an empty file and a file with bad cells, in subfolders."""
    generate_sample_csvs(csvs / "a", filings_per_ticker=3)
    (csvs / "b").mkdir()
    (csvs / "b" / "EMPTY.csv").write_bytes(b"")
    (csvs / "b" / "CELLS.csv").write_text(
        "Assets,Liabilities,fy,fp,form,filed,accn\n12::,abc::USD,2024,FY,10-K,x,A1\n"
        "7::USD,8::USD,2023,FY,10-K,x,A2\n"
    )
    return csvs


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_mixed_folder(tmp_path / "csvs")


def test_batches_give_the_same_database_as_single_files(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "CSV_BATCH_FILES", 1)
    single_db = DbUsGaap(f"sqlite:///{tmp_path / 'single.sqlite'}")
    single = ingest.load_csv_files(folder, single_db, workers=1)
    monkeypatch.setattr(ingest, "CSV_BATCH_FILES", 3)
    batch_db = DbUsGaap(f"sqlite:///{tmp_path / 'batch.sqlite'}")
    batched = ingest.load_csv_files(folder, batch_db, workers=2)
    assert _facts(batch_db) == _facts(single_db) and len(_facts(batch_db)) > 10
    assert batched.files_loaded == single.files_loaded == batched.files_seen - 1
    assert batched.facts_written == single.facts_written
    assert batched.skipped_cells == single.skipped_cells == 2
    assert batched.non_numeric_units == {"USD": 1}
    assert [(Path(s.path).name, s.reason) for s in batched.skipped_files] == [
        ("EMPTY.csv", "empty file: no header, nothing to load")
    ]
    assert sorted(batched.messages) == sorted(single.messages)
    again = ingest.load_csv_files(folder, batch_db)
    assert again.files_unchanged == batched.files_loaded and again.facts_written == 0


def test_two_files_of_the_same_ticker_hold_the_union(tmp_path: Path) -> None:
    """Two sources of one ticker no longer replace each other (issue 12): each keeps its filings."""
    header = "Assets,fy,fp,form,filed,accn\n"
    for sub, accn in (("a", "OLD"), ("b", "NEW")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "AAA.csv").write_text(f"{header}1::USD,2024,FY,10-K,x,{accn}\n")
    paths = sorted(tmp_path.rglob("*.csv"))
    assert [len(b) for b in ingest.csv_batches(paths)] == [1, 1]
    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    report = ingest.load_csv_files(tmp_path, db)
    assert report.files_loaded == 2
    assert _facts(db) == [
        ["AAA", "NEW", "Assets", "USD", 1.0],
        ["AAA", "OLD", "Assets", "USD", 1.0],
    ]


def test_csv_batches_split_by_size_and_repeated_ticker() -> None:
    paths = [Path(p) for p in ("x/A.csv", "x/B.csv", "x/C.csv", "y/A.csv", "y/D.csv")]
    assert ingest.csv_batches(paths, size=2) == [paths[0:2], paths[2:4], paths[4:5]]
    assert ingest.csv_batches(paths, size=10) == [paths[0:3], paths[3:5]]
    assert ingest.csv_batches([], size=2) == []


def test_fact_codes_path_equals_the_frame_path(folder: Path, tmp_path: Path) -> None:
    from narrative_pipeline.us_gaap import build

    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ingest.load_csv_files(folder, db)
    tickers = db.tickers()[:3]
    codes, frame = db.fact_codes(tickers), db.facts_frame(tickers)
    assert len(codes) == len(frame) > 10
    assert codes.frame().values.tolist() == frame.values.tolist()
    assert build.cell_keys_from_codes(codes).tolist() == build.cell_keys(frame).tolist()
    by_codes, by_frame = build.PairAssigner(), build.PairAssigner()
    ids_by_codes = [by_codes.assign_codes(c).tolist() for c in db.iter_fact_codes(20)]
    ids_by_frames = [
        by_frame.assign(f["concept"], f["unit"]).tolist() for f in build.iter_fact_frames(db, 20)
    ]
    assert len(ids_by_codes) > 1 and len(ids_by_frames) > 1  # several groups each
    assert sum(ids_by_codes, []) == sum(ids_by_frames, [])
    assert by_codes.pairs == by_frame.pairs and len(by_codes.pairs) > 3
