"""`narrative-pipeline ingest`: real CSVs and companyfacts into SQLite + an embedded store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from narrative_pipeline.cli import main


@pytest.mark.slow  # loads the packaged sentence-transformers model
def test_ingest_command_builds_the_store_and_is_idempotent(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csvs = tmp_path / "csvs"
    shutil.copytree(shared_data / "sec-fetcher-csvs", csvs)
    store_path = tmp_path / "store.bin"
    argv = [
        "ingest",
        str(csvs),
        "--db",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--store",
        str(store_path),
    ]
    argv += ["--companyfacts", str(shared_data / "companyfacts" / "AAPL_companyfacts.json.gz")]
    argv += ["--plot-dir", str(tmp_path / "plots"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 loaded" in out and "1 loaded" in out and "triplets" in out
    assert (tmp_path / "plots" / "pca_explained_variance.png").is_file()

    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    with DataStore(store_path, read_only=True) as handle:
        store = UsGaapStore(handle)
        count = store.get_triplet_count()
        assert count > 0 and store.load_pca_model() is not None
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0 loaded" in out and "nothing changed" in out
    with DataStore(store_path, read_only=True) as handle:
        assert UsGaapStore(handle).get_triplet_count() == count


def test_ingest_command_needs_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="CSV folder"):
        main(["ingest"])
