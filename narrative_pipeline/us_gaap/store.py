"""`UsGaapStore`: SEC facts -> (concept, unit, value) triplets, scalers, embeddings and PCA.

It sits on any store with the simd-r-drive API (our embedded `DataStore`, our WebSocket client
or the official client) and uses only `write`, `batch_write`, `read`, `batch_read`, `delete`.
This class is a thin facade; the work is done by the modules it calls:

- `generations.py`: the manifest, live/pending generations, their tables, deletion;
- `pairs_step.py`: step 2, a full build of cells, pair and ticker ids, value indexes;
- `model_steps.py`: steps 3-6 (embeddings, scalers, PCA, write_triplets: the switch);
- `incremental.py`: `update_from_db`, re-materialising only the tickers that changed;
- `reads.py`: `read_cells`, `read_cell_range`, lookups; layout and encodings: `layout.py`.

The steps (one Dagster asset each):

1. `ingest_us_gaap_csvs` / `ingest_companyfacts`: files -> database, then 2-6.
2. `build_concept_unit_pairs(db)`: cells in (ticker, accn, concept, unit) order get
   i_cell 0..n-1; pairs get ids in order of first appearance; writes a new *generation*.
3. `generate_embeddings(db)`: one sentence embedding per pair, cached by (model, text).
4. `fit_scalers(kind)`: one scaler per pair (robust by default).
5. `fit_pca()` (the original's `generate_pca_embeddings`): PCA-reduced pair embeddings.
6. `write_triplets()`: makes the generation live (scaled values are computed on read).

Reads (`read_cells`, lookups, counts) only ever see the live generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from narrative_pipeline.db.protocol import FactSource, FactSourceAndTarget
from narrative_pipeline.store.protocol import KeyValueStore
from narrative_pipeline.us_gaap import incremental as steps
from narrative_pipeline.us_gaap import model_steps, reads
from narrative_pipeline.us_gaap.cells import Cell, CellArrays, ConceptUnitPair
from narrative_pipeline.us_gaap.generations import StaleTripletsError, StoreState
from narrative_pipeline.us_gaap.reports import (
    EmbeddingReport,
    IngestReport,
    PairsReport,
    PcaReport,
    ScalerReport,
    TripletReport,
)

__all__ = ["StaleTripletsError", "UsGaapStore"]


class UsGaapStore:
    """Facade over a simd-r-drive style key/value store (see module docstring)."""

    def __init__(self, data_store: KeyValueStore, *, cache_chunks: int = 32) -> None:
        self.data_store = data_store
        self._state = StoreState(data_store, cache_chunks)

    def refresh(self) -> None:
        """Forget cached state; the next call re-reads the manifest (another process wrote)."""
        self._state.refresh()

    # ------------------------------------------------------------------ step 1: files
    def ingest_us_gaap_csvs(
        self,
        csv_dir: str | Path,
        db: FactSourceAndTarget,
        *,
        downstream: bool = True,
        **options: Any,
    ) -> IngestReport:
        """sec-fetcher CSVs under `csv_dir` -> database (unchanged files skipped), then steps 2-6.

        `progress(files_done, files_total, path)` is called after each file. Other `options` go
        to the downstream steps: scaler_kind, embedding_model, embedder (+ model_id),
        pca_variance, pca_components, plot_dir, make_plots. `downstream=False` stops after the
        files (the Dagster `raw_records` asset); `build_from_db` runs the rest later.
        """
        from narrative_pipeline.us_gaap.ingest import load_csv_files

        progress, shrink = options.pop("progress", None), options.pop("allow_shrink", False)
        report = load_csv_files(csv_dir, db, progress=progress, allow_shrink=shrink)
        return self._finish_ingest(report, db, downstream, options)

    def ingest_companyfacts(
        self, path: str | Path, db: FactSourceAndTarget, *, downstream: bool = True, **options: Any
    ) -> IngestReport:
        """SEC companyfacts (`.json`, `.json.gz`, folder of them, or `companyfacts.zip`) -> db, then 2-6."""
        from narrative_pipeline.us_gaap.ingest import load_companyfacts

        progress, shrink = options.pop("progress", None), options.pop("allow_shrink", False)
        report = load_companyfacts(path, db, progress=progress, allow_shrink=shrink)
        return self._finish_ingest(report, db, downstream, options)

    def _finish_ingest(
        self, report: IngestReport, db: FactSource, downstream: bool, options: dict
    ) -> IngestReport:
        """Steps 2-6 after files were loaded: incremental when files changed (a full build
        when nothing is live or the change is large), else only if the store lags the db."""
        if downstream and report.files_loaded:
            steps.update_from_db(self._state, db, False, options, report)
        elif downstream:
            steps.build_if_needed(self._state, report, db, force=False, options=options)
        steps.fill_totals(self._state, report)
        return report

    def build_from_db(self, db: FactSource, *, force: bool = False, **options: Any) -> IngestReport:
        """Steps 2-6 over the database's facts (a full build), unless the live triplets
        already match it. Options as for `ingest_us_gaap_csvs`."""
        report = IngestReport(source="database")
        steps.build_if_needed(self._state, report, db, force=force, options=options)
        steps.fill_totals(self._state, report)
        return report

    def update_from_db(
        self, db: FactSource, *, force: bool = False, **options: Any
    ) -> IngestReport:
        """Re-materialise only the tickers whose facts changed since the live generation
        (added, changed, removed), through triplets; a full build when there is no live
        generation, when `force`, or when the change is too large (incremental.py). Extra
        options: `pca_refit` (True: refit the PCA), `pca_floor` (refit when the kept variance
        over the live pairs falls below it; default: the configured variance), `freeze_scalers`
        (True: pairs already scaled keep their scalers, only new pairs are fitted, and a large
        change stays incremental; us_gaap/frozen_scalers.py)."""
        return steps.update_from_db(self._state, db, force=force, options=options)

    # ------------------------------------------------------------------ steps 2-6
    def build_concept_unit_pairs(self, db: FactSource, *, incremental: bool = False) -> PairsReport:
        """Stream the database's facts into a new generation of cell chunks and pair ids.

        `incremental=True`: only the tickers changed since the live generation are re-read
        (a full build when nothing is live); steps 4-5 then refit only what changed.
        """
        return steps.pairs_step_for(self._state, db, incremental)

    def generate_embeddings(
        self,
        db: FactSource | None = None,
        model_name_or_path: str | None = None,
        *,
        embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
        model_id: str | None = None,
    ) -> EmbeddingReport:
        """Embed each pair's text; texts already embedded by the same model come from the cache.

        `embedder` (texts -> matrix) replaces the sentence-transformers model, e.g. in tests;
        then `model_id` names it for the cache.
        """
        return model_steps.generate_embeddings(
            self._state, db, model_name_or_path, embedder, model_id
        )

    def fit_scalers(self, kind: str = "robust", *, freeze_existing: bool = False) -> ScalerReport:
        """One scaler per pair over all of its values (see preprocessing/scalers.py for the
        rules); after an incremental step 2, only the pairs whose values changed.
        `freeze_existing`: pairs the live generation scales keep their scalers bit for bit;
        only the others are fitted (us_gaap/frozen_scalers.py)."""
        return steps.scalers_step_for(self._state, kind, freeze_existing)

    def load_scalers(self) -> list:
        """The fitted sklearn scaler of every live pair, indexed by pair_id."""
        return self._state.scalers(self._state.require_live())

    def fit_pca(
        self,
        variance: float | None = 0.95,
        n_components: int | None = None,
        *,
        plot_dir: str | Path | None = None,
        make_plots: bool = True,
        refit: bool = False,
    ) -> PcaReport:
        """Exact float64 PCA of the pair embeddings; stores the model and reduced embeddings.

        The report carries two PNGs (explained-variance curve, 2-D scatter of the pairs), also
        written to `plot_dir` when given; `make_plots=False` skips them (about a second).
        After an incremental step 2 the live model projects the new pairs instead, unless
        `refit`, another configuration, or the kept variance falls below the configured one.
        """
        return steps.pca_step_for(self._state, variance, n_components, refit, plot_dir, make_plots)

    def generate_pca_embeddings(
        self, variance: float | None = 0.95, n_components: int | None = None, **kwargs: Any
    ) -> PcaReport:
        """The original's name for step 5 (`fit_pca`)."""
        return self.fit_pca(variance, n_components, **kwargs)

    def load_pca_model(self) -> Any:
        """The live sklearn PCA, or None when none was fitted (as the original)."""
        return model_steps.load_pca_model(self._state, self._state.live())

    def write_triplets(self) -> TripletReport:
        """Make the working generation live with its scalers (scaled values computed on read)."""
        return model_steps.write_triplets(self._state)

    # ------------------------------------------------------------------ reads
    def get_triplet_count(self) -> int:
        """Number of live cells (0 before the first ingest)."""
        from narrative_pipeline.us_gaap import layout

        return layout.decode_count(self.data_store.read(layout.TRIPLET_COUNT_KEY)) or 0

    def get_pair_count(self) -> int:
        """Number of live (concept, unit) pairs (0 before the first ingest)."""
        from narrative_pipeline.us_gaap import layout

        return layout.decode_count(self.data_store.read(layout.PAIR_COUNT_KEY)) or 0

    def get_tickers(self) -> list[str]:
        """Ticker symbol of each ticker id (`CellArrays.ticker_id` indexes this list)."""
        return reads.get_tickers(self._state)

    def iterate_concept_unit_pairs(self) -> Iterator[tuple[int, ConceptUnitPair]]:
        """(pair_id, ConceptUnitPair(concept, uom)) for every live pair, by pair_id."""
        live = self._state.live()
        if live is None:
            return
        yield from enumerate(self._state.pairs(live))

    def get_embedding_matrix(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """(PCA-reduced embeddings float64 [n_pairs, k], [(concept, unit)] by pair_id)."""
        return reads.get_embedding_matrix(self._state)

    def read_cell_range(self, start: int, stop: int) -> CellArrays:
        """Columns of cells start..stop-1 (clipped to the live count), as numpy arrays."""
        return reads.read_cell_range(self._state, start, stop)

    def read_cells(self, indices: Sequence[int] | np.ndarray) -> CellArrays:
        """Columns of the given cells, in the order given (repeats allowed)."""
        return reads.read_cells(self._state, indices)

    def batch_lookup_by_indices(self, indices: Sequence[int] | np.ndarray) -> list[Cell]:
        """One `Cell` per index: arrays are fetched for all indices at once, then objects built."""
        return reads.batch_lookup_by_indices(self._state, indices)

    def lookup_by_index(self, i_cell: int) -> Cell:
        return self.batch_lookup_by_indices([i_cell])[0]

    def lookup_by_triplet(self, concept: str, uom: str, value: float) -> Cell:
        """The cell holding this (concept, unit, value); the first by i_cell if several do.

        The unit is matched upper-cased, as readers store it. Raises KeyError when absent.
        """
        return reads.lookup_by_triplet(self._state, concept, uom, value)
