"""UsGaapStore end to end on the real SEC files: SQLite + the embedded DataStore.

Uses the test fake embedder for speed (the real model runs in test_us_gaap_store_cli.py);
everything else is the real code path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_fakes import (
    CountingEmbedder,
    assert_exact_round_trip,
)

FAST = {"embedder": CountingEmbedder(), "make_plots": False}


@pytest.fixture
def workdir(tmp_path: Path, shared_data: Path) -> Path:
    csvs = tmp_path / "csvs"
    shutil.copytree(shared_data / "sec-fetcher-csvs", csvs / "nested")
    return tmp_path


def _open(tmp: Path):
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.store import DataStore

    return DbUsGaap(f"sqlite:///{tmp / 'narrative.sqlite'}"), DataStore(tmp / "store.bin")


def _reader_fact_count(paths: list[Path]) -> int:
    from narrative_pipeline.readers import read_sec_fetcher_csv

    return sum(len(read_sec_fetcher_csv(p, None).facts) for p in paths)


def test_csv_ingest_counts_round_trip_and_lookups(workdir: Path) -> None:
    db, handle = _open(workdir)
    with handle:
        store = UsGaapStore(handle)
        report = store.ingest_us_gaap_csvs(workdir / "csvs", db, **FAST)
        files = sorted((workdir / "csvs").rglob("*.csv"))
        expected = _reader_fact_count(files)
        assert report.files_seen == 4 and report.files_loaded == 4 and not report.skipped_files
        assert report.facts_written == expected == db.fact_count()
        assert store.get_triplet_count() == expected == report.triplets
        facts = db.facts_frame()
        assert store.get_pair_count() == len(facts[["concept", "unit"]].drop_duplicates())

        cells = store.batch_lookup_by_indices(np.arange(expected))
        for cell in cells:  # the original's test, on every cell
            assert cell.scaler.transform([[cell.unscaled_value]])[0][0] == cell.scaled_value
            if cell.unscaled_value != 0:
                assert cell.scaled_value != cell.unscaled_value
        assert [c.unscaled_value for c in cells] == facts["value"].tolist()
        assert [(c.concept, c.uom) for c in cells] == list(
            zip(facts["concept"], facts["unit"], strict=True)
        )

        arrays = store.read_cells(np.arange(expected)[::-1])
        assert arrays.scaled.tolist() == [c.scaled_value for c in reversed(cells)]

        row = facts.iloc[len(facts) // 2]
        found = store.lookup_by_triplet(row["concept"], row["unit"], row["value"])
        assert (found.concept, found.uom, found.unscaled_value) == (
            row["concept"],
            row["unit"],
            row["value"],
        )
        assert (
            found.i_cell
            == facts.index[
                (facts.concept == row["concept"])
                & (facts.unit == row["unit"])
                & (facts.value == row["value"])
            ].min()
        )


def test_reingest_of_unchanged_files_does_nothing_and_a_changed_file_rebuilds(
    workdir: Path,
) -> None:
    db, handle = _open(workdir)
    with handle:
        store = UsGaapStore(handle)
        store.ingest_us_gaap_csvs(workdir / "csvs", db, **FAST)
        size_before = handle.file_size()
        again = store.ingest_us_gaap_csvs(workdir / "csvs", db, **FAST)
        assert again.files_loaded == 0 and again.files_unchanged == 4
        assert not again.downstream_ran
        assert handle.file_size() == size_before  # not one byte written

        target = next((workdir / "csvs").rglob("AAPL.csv"))
        lines = target.read_text().splitlines(keepends=True)
        target.write_text("".join(lines[:-3]))  # drop three filings
        held_back = store.ingest_us_gaap_csvs(workdir / "csvs", db, **FAST)
        assert held_back.files_loaded == 0 and len(held_back.skipped_files) == 1  # a shrink
        assert not held_back.downstream_ran and handle.file_size() == size_before
        changed = store.ingest_us_gaap_csvs(workdir / "csvs", db, allow_shrink=True, **FAST)
        assert changed.files_loaded == 1 and changed.downstream_ran
        assert store.get_triplet_count() == db.fact_count() < again.triplets
        assert changed.embedding_report.embedded == 0  # same pairs: all from the cache


def test_companyfacts_ingest(shared_data: Path, tmp_path: Path) -> None:
    from narrative_pipeline.readers import read_companyfacts

    db, handle = _open(tmp_path)
    source = shared_data / "companyfacts"
    with handle:
        store = UsGaapStore(handle)
        report = store.ingest_companyfacts(source, db, **FAST)
        expected = sum(
            len(r.facts) for p in sorted(source.iterdir()) for r in read_companyfacts(p, None)
        )
        assert report.files_loaded == 3 and report.facts_written == expected
        assert store.get_triplet_count() == db.fact_count() == expected
        n = store.get_triplet_count()
        whole = store.read_cell_range(0, n)
        assert_exact_round_trip(store, whole)
        sample = store.batch_lookup_by_indices(np.random.default_rng(0).integers(0, n, 300))
        for cell in sample:
            assert cell.scaler.transform([[cell.unscaled_value]])[0][0] == cell.scaled_value
        assert store.ingest_companyfacts(source, db, **FAST).files_loaded == 0
