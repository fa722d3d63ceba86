"""Step 2, full build: the database's facts -> a new generation of cell chunks, ticker and pair
ids, per-pair value indexes and the generation's tables (chunk table, tickers, pairs).

Cells get i_cell in (ticker, accn, concept, unit) order; pairs and tickers get ids in order of
first appearance. Everything is written beside the live generation (which stays readable) and
goes live with `write_triplets`. Incremental updates are in `incremental.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import numpy as np

from narrative_pipeline.db.protocol import FactSource
from narrative_pipeline.us_gaap import build
from narrative_pipeline.us_gaap.chunk_table import ChunkTable
from narrative_pipeline.us_gaap.generations import StoreState
from narrative_pipeline.us_gaap.pair_index_build import PairIndexCells
from narrative_pipeline.us_gaap.reports import PairsReport

if TYPE_CHECKING:
    from narrative_pipeline.db.database import FactCodes
    from narrative_pipeline.db.protocol import RawQueries


def build_concept_unit_pairs(state: StoreState, db: FactSource) -> PairsReport:
    """Stream the database's facts into a new generation of cell chunks and pair ids."""
    started = time.perf_counter()
    generation = state.begin_generation()
    manifest = state.manifest()
    try:
        record, new_pairs = _write_generation(state, db, generation, manifest["live"])
    except BaseException:
        state.abandon_pending()
        raise
    manifest["pending"] = record
    state.save()
    return PairsReport(
        generation=generation,
        n_cells=record["n_cells"],
        n_pairs=record["n_pairs"],
        n_chunks=record["n_chunks"],
        new_pairs=new_pairs,
        seconds=round(time.perf_counter() - started, 4),
    )


def _write_generation(
    state: StoreState, db: FactSource, generation: int, live: dict | None
) -> tuple[dict, int]:
    pairs = build.PairAssigner()
    tickers = build.TickerAssigner()
    writes = build.BackgroundWrites(state.data_store)
    writer = build.CellChunkWriter(writes, generation)
    index_cells = PairIndexCells(generation, int(db.fact_count()))
    counts = np.zeros(0, dtype=np.int64)
    try:
        for columns in fact_batches(db, pairs, tickers):
            if not np.all(np.isfinite(columns["unscaled"])):
                raise ValueError("database returned non-finite fact values; readers must skip them")
            writer.append(columns)
            index_cells.add(columns["pair_id"], columns["unscaled"])
            counts = add_counts(counts, columns["pair_id"], len(pairs.pairs))
        n_cells = writer.close()
        index_cells.write_indexes(writes)
    finally:
        index_cells.close()
        writes.close()
    table = ChunkTable.from_rows(writer.rows)
    record = new_record(generation, table, len(pairs.pairs), len(tickers.tickers))
    state.write_record_tables(
        record,
        table,
        {"tickers": tickers.tickers, "fingerprints": ticker_fingerprints(db)},
        pair_table(pairs.pairs, counts),
        np.full(len(pairs.pairs), generation, dtype=np.uint32),
    )
    assert n_cells == table.n_cells
    previous = set(state.pairs(live)) if live else set()
    return record, len(set(pairs.pairs) - previous)


def new_record(generation: int, table: ChunkTable, n_pairs: int, n_tickers: int) -> dict:
    return {
        "generation": generation,
        "n_cells": table.n_cells,
        "n_chunks": len(table),
        "n_pairs": n_pairs,
        "n_tickers": n_tickers,
        "embeddings": None,
        "scalers": None,
        "pca": None,
        "triplets": None,
    }


def pair_table(pairs: list[tuple[str, str]], counts: np.ndarray) -> dict:
    counts = np.concatenate([counts, np.zeros(max(0, len(pairs) - len(counts)), np.int64)])
    return {
        "concepts": [c for c, _ in pairs],
        "units": [u for _, u in pairs],
        "counts": counts.tolist(),
    }


def ticker_fingerprints(db: FactSource) -> dict[str, str]:
    """What says a ticker's facts changed (db/ticker_state.py), so an update can rebuild only
    the tickers that changed. The store's database is a DbUsGaap, which answers raw queries."""
    from narrative_pipeline.db.ticker_state import ticker_fingerprints as fingerprints

    return fingerprints(cast("RawQueries", db))


def add_counts(counts: np.ndarray, pair_id: np.ndarray, n_pairs: int) -> np.ndarray:
    frame_counts = np.bincount(pair_id, minlength=n_pairs)
    if len(counts) < n_pairs:
        counts = np.concatenate([counts, np.zeros(n_pairs - len(counts), dtype=np.int64)])
    return counts + frame_counts


def fact_batches(
    db: FactSource,
    pairs: build.PairAssigner,
    tickers: build.TickerAssigner,
    only: list[str] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Stored cell columns per batch of facts in database order (`only`: those tickers),
    from the database's streaming reader (iter_fact_codes: no string object per fact).
    Cell keys (which do not depend on the ids assigned here) are computed a group ahead
    in a thread; pair and ticker ids, numbered in order of appearance, here."""
    groups = db.iter_fact_codes() if only is None else [db.fact_codes(only)]
    pair_hashes = build.PairHashes()

    def with_keys(codes: FactCodes) -> tuple[FactCodes, np.ndarray]:
        return codes, build.cell_keys_from_codes(codes, pair_hashes)

    for codes, cell_key in build.iter_ahead(with_keys, (c for c in groups if len(c))):
        yield {
            "pair_id": pairs.assign_codes(codes),
            "unscaled": np.asarray(codes.values, dtype=np.float64),
            "cell_key": cell_key,
            "ticker_id": tickers.assign(codes.filing_ticker.to_pylist(), codes.filing_pos),
        }
