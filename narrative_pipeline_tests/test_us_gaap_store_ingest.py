"""Ingestion on files the test writes (no shared data needed): bad files never stop a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_fakes import CountingEmbedder

FAST = {"embedder": CountingEmbedder(), "make_plots": False}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    csvs = tmp_path / "csvs"
    generate_sample_csvs(csvs / "a", filings_per_ticker=4)
    (csvs / "b").mkdir()
    (csvs / "b" / "EMPTY.csv").write_bytes(b"")
    (csvs / "b" / "HEADERONLY.csv").write_text("Assets,fy,fp,form,filed,accn\n")
    (csvs / "b" / "BINARY.csv").write_bytes(bytes(range(256)) * 8)
    return csvs


def _open(tmp: Path):
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.store import DataStore

    return DbUsGaap(f"sqlite:///{tmp / 'narrative.sqlite'}"), DataStore(tmp / "store.bin")


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_files_are_reported_and_good_ones_load(
    folder: Path, tmp_path: Path, workers: int
) -> None:
    from narrative_pipeline.us_gaap.ingest import load_csv_files

    db, handle = _open(tmp_path)
    with handle:
        seen = []
        report = load_csv_files(
            folder, db, progress=lambda d, t, p: seen.append((d, t)), workers=workers
        )
        good = sorted((folder / "a").glob("*.csv"))
        assert report.files_seen == len(good) + 3
        skipped = {Path(s.path).name for s in report.skipped_files}
        assert {"EMPTY.csv", "BINARY.csv"} <= skipped
        # A header-only file is a ticker with no filings: loaded (0 facts) or skipped, never lost.
        assert report.files_loaded == len(good) + ("HEADERONLY.csv" not in skipped)
        assert all(s.reason for s in report.skipped_files)
        assert seen[-1] == (report.files_seen, report.files_seen)
        assert db.fact_count() == report.facts_written > 0


def test_ingest_then_reingest_and_vectorised_reads(folder: Path, tmp_path: Path) -> None:
    db, handle = _open(tmp_path)
    with handle:
        store = UsGaapStore(handle)
        first = store.ingest_us_gaap_csvs(folder, db, **FAST)
        assert first.downstream_ran and first.triplets == db.fact_count()
        assert set(first.timings) >= {
            "files_to_db",
            "pairs",
            "embeddings",
            "scalers",
            "pca",
            "triplets",
        }
        second = store.ingest_us_gaap_csvs(folder, db, **FAST)
        assert second.files_loaded == 0 and not second.downstream_ran
        assert second.files_unchanged == first.files_loaded
        facts = db.facts_frame()
        cells = store.read_cell_range(0, store.get_triplet_count())
        np.testing.assert_array_equal(cells.unscaled, facts["value"].to_numpy())
        objects = store.batch_lookup_by_indices(cells.i_cell)
        assert [c.scaled_value for c in objects] == cells.scaled.tolist()


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    db, handle = _open(tmp_path)
    with handle, pytest.raises(FileNotFoundError, match="does not exist"):
        UsGaapStore(handle).ingest_us_gaap_csvs(tmp_path / "nope", db)
