"""An incremental update that projects new pairs with the live PCA writes only the new pairs'
reduced rows (one more part of the matrix) and shares the live model and earlier rows
(model_steps.save_projected_pca): the matrix read back is the old rows plus the projection of
the new ones, shared keys survive the old generation's deletion, and past REDUCED_PARTS_MAX
parts the matrix is written whole again and the parts it replaced are deleted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from narrative_pipeline.preprocessing import pca as pca_fns
from narrative_pipeline.us_gaap import layout, model_steps
from narrative_pipeline.us_gaap_store import UsGaapStore
from narrative_pipeline_tests.test_us_gaap_store_incremental import (  # noqa: F401 - fixtures
    OPTIONS,
    corpus,
    small_chunks,
)


def _add_ticker(store: UsGaapStore, db, csv_dir: Path, ticker: str, concepts: list[str]) -> str:
    """A CSV (older sec-fetcher layout) with `concepts` (new ones make new pairs), updated."""
    header = ",".join([*concepts, "fy", "fp", "form", "filed", "accn"])
    rows = [
        ",".join([*(f"{k * 10 + j + 1}::USD" for j in range(len(concepts))), "2024", "FY",
                  "10-K", f"2024-0{k + 1}-01", f"{ticker}-{k}"])
        for k in range(3)
    ]  # fmt: skip
    (csv_dir / f"{ticker}.csv").write_text("\n".join([header, *rows]) + "\n")
    store.ingest_us_gaap_csvs(csv_dir, db, downstream=False)
    report = store.update_from_db(db, **OPTIONS, pca_floor=0.0)  # always project
    return report.messages[-1]


def _reopened(store: UsGaapStore) -> UsGaapStore:
    """The same store file seen by a new reader (no memoised matrix)."""
    return UsGaapStore(store.data_store)


def test_projection_writes_only_the_new_rows_and_shares_the_rest(corpus) -> None:  # noqa: F811
    store, db, csv_dir, _ = corpus
    state = store._state
    first = state.live()
    old_rows, _ = store.get_embedding_matrix()
    old_rows = np.array(old_rows)
    model = store.load_pca_model()

    message = _add_ticker(store, db, csv_dir, "ZZA", ["Assets", "NewConceptOne", "NewConceptTwo"])
    assert message.startswith("incremental:")
    live = state.live()
    n_old = first["n_pairs"]
    assert live["n_pairs"] == n_old + 2
    assert live["pca"]["reduced_parts"] == [[first["generation"], None], [live["generation"], 2]]
    assert live["pca"]["model_generation"] == first["generation"]
    assert store.data_store.read(layout.pca_model_key(live["generation"])) is None  # shared

    matrix, pairs = _reopened(store).get_embedding_matrix()
    assert matrix.shape == (n_old + 2, old_rows.shape[1])
    assert np.array_equal(matrix[:n_old], old_rows)
    raw = model_steps.raw_embeddings(state, live)
    assert np.array_equal(matrix[n_old:], pca_fns.reduce(model, raw[n_old:]))
    assert pairs[-2:] == [("NewConceptOne", "USD"), ("NewConceptTwo", "USD")]

    message = _add_ticker(store, db, csv_dir, "ZZB", ["Assets"])  # no new pair
    assert message.startswith("incremental:")
    assert state.live()["pca"]["reduced_parts"] == live["pca"]["reduced_parts"]
    assert np.array_equal(_reopened(store).get_embedding_matrix()[0], matrix)


def test_past_the_part_limit_the_matrix_is_written_whole_again(
    corpus,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, db, csv_dir, _ = corpus
    monkeypatch.setattr(model_steps, "REDUCED_PARTS_MAX", 2)
    state = store._state
    first = state.live()
    _add_ticker(store, db, csv_dir, "ZZA", ["Assets", "NewConceptOne"])
    second = state.live()
    assert len(second["pca"]["reduced_parts"]) == 2
    expected = np.array(store.get_embedding_matrix()[0])
    model = store.load_pca_model()

    _add_ticker(store, db, csv_dir, "ZZB", ["Assets", "NewConceptThree"])
    third = state.live()
    assert layout.reduced_parts(third) == [[third["generation"], None]]  # one whole matrix
    for generation in (first["generation"], second["generation"]):  # replaced parts deleted
        assert store.data_store.read(layout.pca_reduced_key(generation)) is None
    matrix = _reopened(store).get_embedding_matrix()[0]
    assert np.array_equal(matrix[: len(expected)], expected)
    raw = model_steps.raw_embeddings(state, third)
    assert np.array_equal(matrix[len(expected) :], pca_fns.reduce(model, raw[len(expected) :]))
    assert np.array_equal(
        np.asarray(_reopened(store).load_pca_model().components_), np.asarray(model.components_)
    )
