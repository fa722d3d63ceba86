"""Running the steps: the full build (steps 2-6 over every fact) and the incremental update,
which re-materialises only the tickers whose facts changed since the live generation.

An update costs work in proportion to the changed tickers and the pairs they touch:
- tickers: `db/ticker_state.py` fingerprints every ticker from its filing rows and source
  files (no fact row is read); changed and removed tickers' cells leave the chunks that hold
  them (those chunks, found from the chunk table's ticker ranges, are rewritten without them;
  every other chunk is kept as it is, shared with the previous generation); the changed and
  new tickers' facts are read from the database and appended as new chunks;
- pairs keep their ids (new pairs are numbered after the existing ones); each pair that lost,
  gained or moved cells gets a delta against its full index (index_deltas.py), or a new full
  index once the delta is large; scalers are refitted only for the pairs whose values changed
  (scaled values are computed on read, so no cell is rewritten), or, with `freeze_scalers`,
  only the new pairs (frozen_scalers.py; no full build for size);
- embeddings: only texts not in the cache are embedded; PCA: new pairs are projected with the
  live model, refitted only when `pca_refit=True` or when the variance it keeps over the live
  pairs falls below `pca_floor` (default: the configured variance), so the model's input
  basis stays fixed;
- the update is a new generation switched on by the manifest like a full build, so readers
  see the old state or the new one, never a mix.
A full build runs instead when there is nothing live, on `force`, when the scaler kind
changes, or when the changed tickers hold more than `FULL_BUILD_SHARE` of the facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from narrative_pipeline.db.protocol import FactSource
from narrative_pipeline.us_gaap import build, frozen_scalers, layout, model_steps, pairs_step
from narrative_pipeline.us_gaap.chunk_table import ChunkTable
from narrative_pipeline.us_gaap.generations import StoreState
from narrative_pipeline.us_gaap.index_deltas import IndexDeltas
from narrative_pipeline.us_gaap.reports import IngestReport, PairsReport, PcaReport, ScalerReport

if TYPE_CHECKING:
    from narrative_pipeline.db.protocol import RawQueries

FULL_BUILD_SHARE = 0.25

_REPORT_FIELDS = {
    "pairs": "pairs_report",
    "embeddings": "embedding_report",
    "scalers": "scaler_report",
    "pca": "pca_report",
    "triplets": "triplet_report",
}


# ---------------------------------------------------------------------- full build
def build_if_needed(
    state: StoreState, report: IngestReport, db: FactSource, force: bool, options: dict
) -> None:
    if force or not is_up_to_date(state, db):
        run_full_build(state, report, db, options)


def is_up_to_date(state: StoreState, db: FactSource) -> bool:
    """True when the live triplets are complete and cover exactly the database's facts."""
    manifest = state.manifest()
    live = manifest["live"]
    return bool(
        live
        and manifest["pending"] is None
        and live.get("triplets")
        and (live.get("pca") or live["n_pairs"] < 2)  # PCA needs two pairs
        and live["n_cells"] == int(db.fact_count())
    )


def fill_totals(state: StoreState, report: IngestReport) -> None:
    live = state.live()
    report.triplets = live["n_cells"] if live else 0
    report.pairs = live["n_pairs"] if live else 0
    total = sum(report.timings.values())
    if report.downstream_ran and total:
        report.triplets_per_second = report.triplets / total


def run_full_build(state: StoreState, report: IngestReport, db: FactSource, options: dict) -> None:
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("pairs", lambda: pairs_step.build_concept_unit_pairs(state, db)),
        ("embeddings", lambda: _embeddings(state, db, options)),
        ("scalers", lambda: _full_scalers(state, options)),
        ("pca", lambda: _full_pca(state, options)),
        ("triplets", lambda: model_steps.write_triplets(state)),
    ]
    _run_steps(report, steps)


def _full_scalers(state: StoreState, options: dict) -> ScalerReport:
    kind = options.get("scaler_kind", "robust")
    if options.get("freeze_scalers"):
        return frozen_scalers.fit_new_pair_scalers(state, kind)
    return model_steps.fit_scalers(state, kind)


def _embeddings(state: StoreState, db: FactSource, options: dict) -> Any:
    return model_steps.generate_embeddings(
        state,
        db,
        options.get("embedding_model"),
        options.get("embedder"),
        options.get("model_id"),
    )


def _full_pca(state: StoreState, options: dict) -> Any:
    return model_steps.fit_pca(
        state,
        options.get("pca_variance", 0.95),
        options.get("pca_components"),
        options.get("plot_dir"),
        options.get("make_plots", True),
    )


def _run_steps(report: IngestReport, steps: list[tuple[str, Callable[[], Any]]]) -> None:
    for name, step in steps:
        started = time.perf_counter()
        try:
            result = step()
        except ValueError as exc:
            if name != "pca":
                raise
            report.messages.append(f"PCA skipped: {exc}")
            result = None
        report.timings[name] = round(time.perf_counter() - started, 4)
        setattr(report, _REPORT_FIELDS[name], result)
    report.downstream_ran = True


# ---------------------------------------------------------------------- incremental update
@dataclass(frozen=True)
class TickerChanges:
    """What changed since the live generation, or why a full build is needed instead."""

    changed: list[str]  # added or changed
    removed: list[str]
    full_build_reason: str | None = None


def plan_update(
    state: StoreState,
    db: FactSource,
    force: bool,
    scaler_kind: str | None,
    size_rule: bool = True,
) -> TickerChanges:
    """Tickers whose fingerprint differs from the live generation's (db/ticker_state.py).
    `size_rule=False` (frozen scalers): no full build for a large change, since a full build
    would refit the PCA the frozen inputs go with."""
    from narrative_pipeline.db.ticker_state import ticker_fact_counts

    live = state.live()
    if force:
        return TickerChanges([], [], "forced")
    if live is None or not live.get("triplets") or not live.get("scalers"):
        return TickerChanges([], [], "no live generation")
    if scaler_kind is not None and scaler_kind != live["scalers"]["kind"]:
        return TickerChanges([], [], f"scaler kind changed to {scaler_kind}")
    now = pairs_step.ticker_fingerprints(db)
    before = state.ticker_table(live)["fingerprints"]
    changed = sorted(t for t, fp in now.items() if before.get(t) != fp)
    removed = sorted(t for t in before if t not in now)
    if not size_rule:
        return TickerChanges(changed, removed)
    if len(changed) > FULL_BUILD_SHARE * max(1, len(now)):  # many tickers: no need to count
        return TickerChanges(changed, removed, f"{len(changed)} of {len(now)} tickers changed")
    # the store's database is a DbUsGaap, which answers raw queries (as for the fingerprints)
    incoming = ticker_fact_counts(cast("RawQueries", db), changed) if changed else 0
    if incoming > FULL_BUILD_SHARE * max(1, live["n_cells"]):
        return TickerChanges(
            changed, removed, f"{len(changed)} changed tickers hold {incoming} facts"
        )
    return TickerChanges(changed, removed)


def update_from_db(
    state: StoreState,
    db: FactSource,
    force: bool,
    options: dict,
    report: IngestReport | None = None,
) -> IngestReport:
    """See the module docstring: the steps 2-6, incremental unless a full build is needed
    (into `report` when given: an ingest's own report)."""
    report = report if report is not None else IngestReport(source="database")
    started = time.perf_counter()
    frozen = bool(options.get("freeze_scalers"))
    changes = plan_update(state, db, force, options.get("scaler_kind"), size_rule=not frozen)
    report.timings["tickers"] = round(time.perf_counter() - started, 4)
    if changes.full_build_reason is not None:
        run_full_build(state, report, db, options)
        report.messages.append(f"full build: {changes.full_build_reason}")
    elif not changes.changed and not changes.removed:
        report.messages.append("incremental: no ticker changed")
    else:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("pairs", lambda: build_incremental_pairs(state, db, changes)),
            ("embeddings", lambda: _embeddings(state, db, options)),
            ("scalers", lambda: _update_scalers(state, options)),
            (
                "pca",
                lambda: project_pca(
                    state,
                    options.get("pca_variance", 0.95),
                    options.get("pca_components"),
                    refit=bool(options.get("pca_refit")),
                    floor=options.get("pca_floor"),
                ),
            ),
            ("triplets", lambda: model_steps.write_triplets(state)),
        ]
        try:
            _run_steps(report, steps)
        except BaseException:
            state.abandon_pending()
            raise
        report.messages.append(
            f"incremental: {len(changes.changed)} tickers added or changed, "
            f"{len(changes.removed)} removed"
        )
    fill_totals(state, report)
    return report


def _update_scalers(state: StoreState, options: dict) -> ScalerReport:
    if options.get("freeze_scalers"):
        return frozen_scalers.fit_new_pair_scalers(state, state.require_live()["scalers"]["kind"])
    return refit_changed_scalers(state)


def build_incremental_pairs(
    state: StoreState, db: FactSource, changes: TickerChanges
) -> PairsReport:
    """Step 2 for the changed tickers only: a pending generation sharing the live chunks."""
    started = time.perf_counter()
    live = state.require_live()  # plan_update found one (else it asks for a full build)
    generation = state.begin_generation(known_pairs=live["n_pairs"])
    update = TickerUpdate(state, db, live, generation)
    try:
        record = update.apply(changes.changed, changes.removed)
    except BaseException:
        state.abandon_pending()
        raise
    return PairsReport(
        generation=generation,
        n_cells=record["n_cells"],
        n_pairs=record["n_pairs"],
        n_chunks=record["n_chunks"],
        new_pairs=record["n_pairs"] - live["n_pairs"],
        seconds=round(time.perf_counter() - started, 4),
        incremental=True,
        changed_tickers=len(changes.changed),
        removed_tickers=len(changes.removed),
        touched_pairs=record["update"]["touched_pairs"],
        value_changed_pairs=len(record["update"]["value_changed"]),
    )


def pairs_step_for(state: StoreState, db: FactSource, incremental: bool) -> PairsReport:
    """Step 2 as the Dagster asset runs it: incremental when asked and possible, else full."""
    if incremental:
        changes = plan_update(state, db, force=False, scaler_kind=None)
        if changes.full_build_reason is None:
            return build_incremental_pairs(state, db, changes)
    return pairs_step.build_concept_unit_pairs(state, db)


def scalers_step_for(state: StoreState, kind: str, freeze_existing: bool = False) -> ScalerReport:
    """Step 4: only the changed pairs after an incremental step 2 (same kind), else all;
    `freeze_existing`: only the pairs the live generation has no value of (frozen_scalers.py)."""
    if freeze_existing:
        return frozen_scalers.fit_new_pair_scalers(state, kind)
    update, live = state.working().get("update"), state.live()
    if update is not None and live and live["scalers"]["kind"] == kind:
        return refit_changed_scalers(state)
    return model_steps.fit_scalers(state, kind)


def pca_step_for(
    state: StoreState,
    variance: float | None,
    n_components: int | None,
    refit: bool,
    plot_dir: Any,
    make_plots: bool,
) -> PcaReport:
    """Step 5: after an incremental step 2 the live model projects the new pairs (unless
    `refit` or the floor says otherwise), else a full fit."""
    if state.working().get("update") is not None:
        return project_pca(
            state,
            variance,
            n_components,
            refit=refit,
            plot_dir=plot_dir,
            make_plots=make_plots,
        )
    return model_steps.fit_pca(state, variance, n_components, plot_dir, make_plots)


def _base_of(state: StoreState, record: dict) -> dict:
    """The live record an incremental pending record was built on (it must still be live)."""
    live = state.live()
    if live is None or live["generation"] != record["update"]["base"]:
        raise RuntimeError(
            "the live generation changed since this update began: run build_concept_unit_pairs again"
        )
    return live


def refit_changed_scalers(state: StoreState) -> ScalerReport:
    """Scalers of the pairs whose values changed; every other pair keeps its parameters."""
    started = time.perf_counter()
    record = state.working()
    live = _base_of(state, record)
    kind = live["scalers"]["kind"]
    changed = np.asarray(record["update"]["value_changed"], dtype=np.int64)
    fit = model_steps.ScalerFit(state, record, kind, base=live)
    if kind == "quantile":
        _carry_quantile_pickles(state, live, record, set(changed.tolist()))
    fit.refit(changed)
    fit.save()
    return fit.report(started, refitted_pairs=len(changed))


def _carry_quantile_pickles(state: StoreState, live: dict, record: dict, changed: set) -> None:
    """Pairs whose index moved to the new generation without a value change keep their
    fitted quantile scaler, now under the new generation's key."""
    old_gens = state.pair_index_generations(live)
    new_gens = state.pair_index_generations(record)
    moved = [p for p in range(live["n_pairs"]) if new_gens[p] != old_gens[p] and p not in changed]
    state.copy_entries(
        [
            (layout.scaler_key(int(old_gens[p]), p), layout.scaler_key(record["generation"], p))
            for p in moved
        ]
    )


def project_pca(
    state: StoreState,
    variance: float | None,
    n_components: int | None,
    *,
    refit: bool = False,
    floor: float | None = None,
    plot_dir: Any = None,
    make_plots: bool = False,
) -> PcaReport:
    """New pairs projected with the live PCA, unless a refit is asked for, the configuration
    changed, or the variance the model keeps over the live pairs fell below `floor` (default:
    the configured variance, so the `pca_model` check still holds; none for a configured
    component count)."""
    from narrative_pipeline.preprocessing import pca as pca_fns

    started = time.perf_counter()
    record = state.working()
    live = _base_of(state, record)
    live_pca = live.get("pca") or {}
    target = None if n_components is not None else variance
    same_config = live_pca.get("configured_variance") == target and (
        n_components is None or live_pca.get("n_components") == n_components
    )
    if refit or not live_pca or not same_config:
        return model_steps.fit_pca(state, variance, n_components, plot_dir, make_plots)
    model = model_steps.load_pca_model(state, live)
    raw = model_steps.raw_embeddings(state, record)
    kept = kept_variance(model, raw[state.pair_counts(record) > 0])
    if floor is None:
        floor = target if target is not None else 0.0
    if kept < floor:
        return model_steps.fit_pca(state, variance, n_components, plot_dir, make_plots)
    new = raw[live["n_pairs"] :]
    new_rows = pca_fns.reduce(model, new) if len(new) else np.zeros((0, model.n_components_))
    model_steps.save_projected_pca(state, record, live, new_rows, target)
    return PcaReport(
        n_pairs=len(raw),
        input_dim=raw.shape[1],
        n_components=int(model.n_components_),
        explained_variance=kept,
        configured_variance=target,
        configured_components=n_components,
        seconds=round(time.perf_counter() - started, 4),
        refitted=False,
    )


class TickerUpdate:
    """One incremental update: the new generation's chunks, tables and value indexes."""

    def __init__(self, state: StoreState, db: FactSource, live: dict, generation: int) -> None:
        self.state, self.db, self.live, self.generation = state, db, live, generation
        self.value_changed: set[int] = set()

    def apply(self, changed: list[str], removed: list[str]) -> dict:
        state, live = self.state, self.live
        table = state.chunk_table(live)
        tickers = build.TickerAssigner(state.ticker_table(live)["tickers"])
        pairs = build.PairAssigner([(c, u) for c, u in state.pairs(live)])
        counts = state.pair_counts(live).copy()
        gone = np.array([tickers.ids[t] for t in changed + removed if t in tickers.ids], np.uint32)
        rows, written, dropped, moved_cells, moved = self._drop_tickers(table, gone, counts)
        first_new = len(written)
        writer = build.CellChunkWriter(state.data_store, self.generation, first_chunk=first_new)
        new_cells: list[tuple] = []
        appended = 0
        for columns in pairs_step.fact_batches(self.db, pairs, tickers, only=changed):
            writer.append(columns)
            new_cells.append(self._locate(columns, first_new, appended))
            appended += len(columns["pair_id"])
        writer.close()
        new_table = ChunkTable.from_rows(rows + writer.rows)
        counts = pairs_step.add_counts(counts, np.zeros(0, np.uint32), len(pairs.pairs))
        for pid, _, _ in new_cells:
            counts += np.bincount(pid, minlength=len(counts))
            self.value_changed.update(np.unique(pid).tolist())
        new_pairs = np.full(len(pairs.pairs) - live["n_pairs"], self.generation, np.uint32)
        gens = np.concatenate([state.pair_index_generations(live), new_pairs]).astype(np.uint32)
        bases = np.concatenate([state.pair_index_bases(live), new_pairs]).astype(np.uint32)
        touched = sorted(self.value_changed | moved)
        IndexDeltas(state, live, self.generation).write(
            touched, dropped, moved_cells + new_cells, gens, bases
        )
        record = pairs_step.new_record(
            self.generation, new_table, len(pairs.pairs), len(tickers.tickers)
        )
        fingerprints = pairs_step.ticker_fingerprints(self.db)
        state.write_record_tables(
            record,
            new_table,
            {"tickers": tickers.tickers, "fingerprints": fingerprints},
            pairs_step.pair_table(pairs.pairs, counts),
            gens,
            bases,
        )
        record["update"] = {
            "base": live["generation"],
            "value_changed": sorted(self.value_changed),
            "touched_pairs": len(touched),
        }
        state.manifest()["pending"] = record
        state.save()
        return record

    def _drop_tickers(
        self, table: ChunkTable, gone: np.ndarray, counts: np.ndarray
    ) -> tuple[list, list[int], set[int], list[tuple], set[int]]:
        """Rewrite the chunks holding `gone` tickers without their cells (`counts` updated).

        Returns the new table rows, the rewritten chunk numbers, the chunk refs dropped, the
        moved cells [(pair_id, value, locator)] and the pairs those belong to.
        """
        positions = set(table.positions_with_tickers(gone).tolist())
        kept_rows: list = []
        written: list[int] = []
        dropped: set[int] = set()
        moved_cells: list[tuple] = []
        moved: set[int] = set()
        affected: dict[int, dict[str, np.ndarray]] = dict(
            build.iter_chunk_columns(
                self.state.data_store, table, layout.STORED_COLUMNS, sorted(positions)
            )
        )
        for pos, row in enumerate(table.rows()):
            cols = affected.get(pos)
            if cols is None:
                kept_rows.append(row)
                continue
            gone_mask = np.isin(cols["ticker_id"], gone)
            if not gone_mask.any():
                kept_rows.append(row)
                continue
            dropped.add(layout.chunk_ref(row[0], row[1]))
            pid = cols["pair_id"]
            counts -= np.bincount(pid[gone_mask], minlength=len(counts))
            self.value_changed.update(np.unique(pid[gone_mask]).tolist())
            moved.update(np.unique(pid[~gone_mask]).tolist())
            if gone_mask.all():
                continue
            chunk_no = len(written)
            kept = {name: values[~gone_mask] for name, values in cols.items()}
            writer = build.CellChunkWriter(self.state.data_store, self.generation, chunk_no)
            writer.append(kept)
            writer.close()
            written.append(chunk_no)
            kept_rows.append(writer.rows[0])
            offsets = np.arange(len(kept["pair_id"]), dtype=np.uint64)
            moved_cells.append(
                (
                    kept["pair_id"],
                    kept["unscaled"],
                    layout.encode_locators(self.generation, chunk_no, offsets),
                )
            )
        return kept_rows, written, dropped, moved_cells, moved

    def _locate(self, columns: dict, first_chunk: int, before: int) -> tuple:
        """(pair_id, value, locator) of cells appended after `before` others to chunks
        numbered from `first_chunk`."""
        position = before + np.arange(len(columns["pair_id"]), dtype=np.int64)
        chunk = (first_chunk + (position >> layout.CHUNK_SHIFT)).astype(np.uint64)
        offsets = (position & (layout.CHUNK_CELLS - 1)).astype(np.uint64)
        base = np.uint64(self.generation) << np.uint64(layout.LOCATOR_CHUNK_BITS)
        locators = ((base | chunk) << np.uint64(layout.LOCATOR_OFFSET_BITS)) | offsets
        return (columns["pair_id"], columns["unscaled"], locators)


def kept_variance(model: Any, raw: np.ndarray) -> float:
    """Share of the total variance of `raw` that the model's components keep (one BLAS
    thread, as in preprocessing/pca.py: a contended multi-threaded BLAS is many times slower)."""
    from threadpoolctl import threadpool_limits

    x = np.asarray(raw, dtype=np.float64)
    if len(x) < 2:
        return 1.0
    with threadpool_limits(limits=1):
        centered = x - x.mean(axis=0)
        total = float(np.einsum("ij,ij->", centered, centered))
        if total == 0.0:
            return 1.0
        projected = centered @ np.asarray(model.components_, dtype=np.float64).T
        return float(np.einsum("ij,ij->", projected, projected) / total)
