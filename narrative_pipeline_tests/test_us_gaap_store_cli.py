"""`narrative-pipeline ingest` with the real packaged model: real CSVs into SQLite + an embedded store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from narrative_pipeline.cli import main


@pytest.mark.slow  # loads the packaged sentence-transformers model and embeds ~500 pair texts
def test_ingest_command_with_the_real_model(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.store import DataStore
    from narrative_pipeline.us_gaap_store import UsGaapStore

    csvs = tmp_path / "csvs"
    shutil.copytree(shared_data / "sec-fetcher-csvs", csvs)
    store_path, db_url = tmp_path / "store.bin", f"sqlite:///{tmp_path / 'db.sqlite'}"
    argv = ["ingest", str(csvs), "--db", db_url, "--store", str(store_path), "--no-progress"]
    assert main([*argv, "--plot-dir", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "4 loaded" in out and "triplets" in out and "from cache" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "pca_explained_variance.png",
        "pca_pair_scatter.png",
    ]

    with DataStore(store_path) as handle:
        store = UsGaapStore(handle)
        count, n_pairs = store.get_triplet_count(), store.get_pair_count()
        matrix, pairs = store.get_embedding_matrix()
        pca = store.load_pca_model()
        assert count > 0 and matrix.shape == (n_pairs, pca.n_components_) and len(pairs) == n_pairs
        assert pca.explained_variance_ratio_.sum() >= 0.95 and pca.n_features_in_ == 384
        again = store.generate_embeddings(DbUsGaap(db_url))
        assert again.embedded == 0 and again.cache_hits == n_pairs  # every text from the cache

    assert main(argv) == 0
    assert "nothing changed" in capsys.readouterr().out
    companyfacts = shared_data / "companyfacts" / "AAPL_companyfacts.json.gz"
    assert (
        main(
            [
                "ingest",
                "--companyfacts",
                str(companyfacts),
                "--db",
                db_url,
                "--store",
                str(store_path),
                "--files-only",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "1 loaded" in capsys.readouterr().out
    with DataStore(store_path, read_only=True) as handle:
        assert UsGaapStore(handle).get_triplet_count() == count  # files only: store untouched


def test_ingest_command_needs_a_source() -> None:
    with pytest.raises(SystemExit, match="CSV folder"):
        main(["ingest"])
