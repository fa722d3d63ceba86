"""`UsGaapStore`: SEC facts -> (concept, unit, value) triplets, scalers, embeddings and PCA.

It sits on any store with the simd-r-drive API (our embedded `DataStore`, our WebSocket client
or the official client) and uses only `write`, `batch_write`, `read`, `batch_read`, `delete`.
Layout and encodings: `layout.py`. The steps (one Dagster asset each):

1. `ingest_us_gaap_csvs` / `ingest_companyfacts`: files -> database, then 2-6.
2. `build_concept_unit_pairs(db)`: cells in (ticker, accn, concept, unit) order get
   i_cell 0..n-1; pairs get ids in order of first appearance; writes a new *generation*.
3. `generate_embeddings(db)`: one sentence embedding per pair, cached by (model, text).
4. `fit_scalers(kind)`: one scaler per pair (robust by default).
5. `fit_pca()` (the original's `generate_pca_embeddings`): PCA-reduced pair embeddings.
6. `write_triplets()`: scaled values for every cell; makes the generation live.

Reads (`read_cells`, lookups, counts) only ever see the live generation.
"""

from __future__ import annotations

import gc
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from xxhash import xxh3_64_hexdigest

from narrative_pipeline.preprocessing import scalers as scaler_fns
from narrative_pipeline.preprocessing.embeddings import (
    ModelChoice,
    load_sentence_embedder,
    pair_text,
    resolve_model,
)
from narrative_pipeline.us_gaap import build, layout
from narrative_pipeline.us_gaap.cells import Cell, CellArrays, ConceptUnitPair
from narrative_pipeline.us_gaap.chunk_cache import ChunkCache
from narrative_pipeline.us_gaap.reports import (
    EmbeddingReport,
    IngestReport,
    PairsReport,
    PcaReport,
    ScalerReport,
    TripletReport,
)

MANIFEST_FORMAT = 1
EMBED_BATCH = 256
READ_KEYS_BATCH = 4096
SCALER_GROUP_CELLS = 2_000_000  # values held at once while fitting scalers


class StaleTripletsError(RuntimeError):
    """The live scaled values were computed with other scalers than the stored ones."""


class UsGaapStore:
    """Facade over a simd-r-drive style key/value store (see module docstring)."""

    def __init__(self, data_store: Any, *, cache_chunks: int = 32) -> None:
        self.data_store = data_store
        self._cache = ChunkCache(cache_chunks)
        self._manifest: dict | None = None
        self._memo: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ manifest

    def refresh(self) -> None:
        """Forget cached state; the next call re-reads the manifest (another process wrote)."""
        self._manifest = None
        self._memo.clear()
        self._cache.clear()

    def _read_manifest(self) -> dict:
        if self._manifest is None:
            manifest = layout.decode_json(self.data_store.read(layout.manifest_key()))
            if manifest is None:
                manifest = {
                    "format": MANIFEST_FORMAT,
                    "live": None,
                    "pending": None,
                    "next_generation": 1,
                    "garbage": [],
                }
            if manifest.get("format") != MANIFEST_FORMAT:
                raise RuntimeError(
                    f"unsupported UsGaapStore manifest format {manifest.get('format')!r}"
                )
            self._manifest = manifest
        return self._manifest

    def _save_manifest(self) -> None:
        self.data_store.write(layout.manifest_key(), layout.encode_json(self._read_manifest()))
        self._memo.clear()

    def _working(self) -> dict:
        """The generation the steps 3-6 act on: the one being built, else the live one."""
        manifest = self._read_manifest()
        record = manifest["pending"] or manifest["live"]
        if record is not None and record.get("incomplete"):
            raise RuntimeError(
                "an earlier build_concept_unit_pairs(db) did not finish: run it again"
            )
        if record is None:
            raise RuntimeError(
                "no concept/unit pairs built yet: run build_concept_unit_pairs(db) or an ingest"
            )
        return record

    def _live(self) -> dict | None:
        return self._read_manifest()["live"]

    def _require_live(self) -> dict:
        live = self._live()
        if live is None:
            raise LookupError("the store holds no triplets yet: ingest data first")
        return live

    def _require_fresh_triplets(self) -> dict:
        live = self._require_live()
        triplets, scalers = live.get("triplets"), live.get("scalers")
        if (
            triplets is None
            or scalers is None
            or triplets["scalers_fingerprint"] != scalers["fingerprint"]
        ):
            raise StaleTripletsError(
                "scalers were refitted after the scaled values were written: run write_triplets()"
            )
        return live

    # ------------------------------------------------------------------ step 1: files

    def ingest_us_gaap_csvs(
        self, csv_dir: str | Path, db: Any, *, downstream: bool = True, **options: Any
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
        self, path: str | Path, db: Any, *, downstream: bool = True, **options: Any
    ) -> IngestReport:
        """SEC companyfacts (`.json`, `.json.gz`, folder of them, or `companyfacts.zip`) -> db, then 2-6."""
        from narrative_pipeline.us_gaap.ingest import load_companyfacts

        progress, shrink = options.pop("progress", None), options.pop("allow_shrink", False)
        report = load_companyfacts(path, db, progress=progress, allow_shrink=shrink)
        return self._finish_ingest(report, db, downstream, options)

    def _finish_ingest(
        self, report: IngestReport, db: Any, downstream: bool, options: dict
    ) -> IngestReport:
        if downstream:
            self._build_if_needed(report, db, force=bool(report.files_loaded), options=options)
        self._fill_totals(report)
        return report

    def build_from_db(self, db: Any, *, force: bool = False, **options: Any) -> IngestReport:
        """Steps 2-6 over the database's facts, unless the live triplets already match it.

        For callers that load files in several calls (`downstream=False`) and build once.
        Options as for `ingest_us_gaap_csvs`.
        """
        report = IngestReport(source="database")
        self._build_if_needed(report, db, force=force, options=options)
        self._fill_totals(report)
        return report

    def _build_if_needed(self, report: IngestReport, db: Any, force: bool, options: dict) -> None:
        if force or not self._is_up_to_date(db):
            self._run_downstream(report, db, options)

    def _fill_totals(self, report: IngestReport) -> None:
        live = self._live()
        report.triplets = live["n_cells"] if live else 0
        report.pairs = live["n_pairs"] if live else 0
        total = sum(report.timings.values())
        if report.downstream_ran and total:
            report.triplets_per_second = report.triplets / total

    def _is_up_to_date(self, db: Any) -> bool:
        """True when the live triplets are complete and cover exactly the database's facts."""
        manifest = self._read_manifest()
        live = manifest["live"]
        return bool(
            live
            and manifest["pending"] is None
            and live.get("triplets")
            and (live.get("pca") or live["n_pairs"] < 2)  # PCA needs two pairs
            and live["n_cells"] == int(db.fact_count())
        )

    def _run_downstream(self, report: IngestReport, db: Any, options: dict) -> None:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("pairs", lambda: self.build_concept_unit_pairs(db)),
            (
                "embeddings",
                lambda: self.generate_embeddings(
                    db,
                    options.get("embedding_model"),
                    embedder=options.get("embedder"),
                    model_id=options.get("model_id"),
                ),
            ),
            ("scalers", lambda: self.fit_scalers(options.get("scaler_kind", "robust"))),
            (
                "pca",
                lambda: self.fit_pca(
                    options.get("pca_variance", 0.95),
                    options.get("pca_components"),
                    plot_dir=options.get("plot_dir"),
                    make_plots=options.get("make_plots", True),
                ),
            ),
            ("triplets", self.write_triplets),
        ]
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
            setattr(
                report,
                {
                    "pairs": "pairs_report",
                    "embeddings": "embedding_report",
                    "scalers": "scaler_report",
                    "pca": "pca_report",
                    "triplets": "triplet_report",
                }[name],
                result,
            )
        report.downstream_ran = True

    # ------------------------------------------------------------------ step 2: pairs

    def build_concept_unit_pairs(self, db: Any) -> PairsReport:
        """Stream the database's facts into a new generation of cell chunks and pair ids."""
        started = time.perf_counter()
        manifest = self._read_manifest()
        if manifest["pending"] is not None:  # an earlier build never finished: drop it
            self._delete_generation(manifest["pending"])
            manifest["pending"] = None
        generation = manifest["next_generation"]
        manifest["next_generation"] = generation + 1
        # Marked incomplete until done, so a build killed midway is found and deleted next time.
        manifest["pending"] = {"generation": generation, "incomplete": True}
        self._save_manifest()
        try:
            record, new_pairs = self._write_generation(db, generation, manifest["live"])
        except BaseException:
            self._delete_generation(manifest["pending"])
            manifest["pending"] = None
            self._save_manifest()
            raise
        manifest["pending"] = record
        self._save_manifest()
        return PairsReport(
            generation=generation,
            n_cells=record["n_cells"],
            n_pairs=record["n_pairs"],
            n_chunks=record["n_chunks"],
            new_pairs=new_pairs,
            seconds=round(time.perf_counter() - started, 4),
        )

    def _write_generation(self, db: Any, generation: int, live: dict | None) -> tuple[dict, int]:
        """Cell chunks, per-pair value index and pair table of a new generation."""
        assigner = build.PairAssigner()
        writer = build.CellChunkWriter(self.data_store, generation)
        counts = np.zeros(0, dtype=np.int64)
        for pair_id, values, keys in _fact_batches(db, assigner):
            if not np.all(np.isfinite(values)):
                raise ValueError("database returned non-finite fact values; readers must skip them")
            writer.append(pair_id, values, keys)
            counts = _add_counts(counts, pair_id, len(assigner.pairs))
        n_cells, n_chunks = writer.close()
        build.build_pair_index(self.data_store, generation, n_cells, n_chunks)
        concepts = [c for c, _ in assigner.pairs]
        units = [u for _, u in assigner.pairs]
        self.data_store.write(
            layout.pairs_key(generation),
            layout.encode_json({"concepts": concepts, "units": units, "counts": counts.tolist()}),
        )
        previous = set(self._pairs(live)) if live else set()
        record = {
            "generation": generation,
            "n_cells": n_cells,
            "n_chunks": n_chunks,
            "n_pairs": len(concepts),
            "embeddings": None,
            "scalers": None,
            "pca": None,
            "triplets": None,
        }
        return record, len(set(assigner.pairs) - previous)

    def _pairs(self, record: dict) -> list[ConceptUnitPair]:
        memo_key = ("pairs", record["generation"])
        if memo_key not in self._memo:
            table = layout.decode_json(self.data_store.read(layout.pairs_key(record["generation"])))
            if table is None:
                raise LookupError(f"pair table of generation {record['generation']} is missing")
            self._memo[memo_key] = [
                ConceptUnitPair(c, u)
                for c, u in zip(table["concepts"], table["units"], strict=True)
            ]
            self._memo[("counts", record["generation"])] = np.asarray(
                table["counts"], dtype=np.int64
            )
        return self._memo[memo_key]

    def _pair_counts(self, record: dict) -> np.ndarray:
        self._pairs(record)
        return self._memo[("counts", record["generation"])]

    # ------------------------------------------------------------------ step 3: embeddings

    def generate_embeddings(
        self,
        db: Any = None,
        model_name_or_path: str | None = None,
        *,
        embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
        model_id: str | None = None,
    ) -> EmbeddingReport:
        """Embed each pair's text; texts already embedded by the same model come from the cache.

        `embedder` (texts -> matrix) replaces the sentence-transformers model, e.g. in tests;
        then `model_id` names it for the cache.
        """
        started = time.perf_counter()
        record = self._working()
        pairs = self._pairs(record)
        taxonomy = _taxonomy_texts(db)
        texts = [pair_text(p.concept, p.uom, *taxonomy.get(p.concept, (None, None))) for p in pairs]
        choice = (
            ModelChoice(model_id or "custom-embedder", "")
            if embedder
            else resolve_model(model_name_or_path)
        )
        unique_texts = list(dict.fromkeys(texts))
        keys = [layout.embedding_cache_key(choice.model_id, t) for t in unique_texts]
        cached = self._batch_read(keys)
        missing = [i for i, payload in enumerate(cached) if payload is None]
        dim = None
        if missing:
            embed = embedder or load_sentence_embedder(choice)
            for start in range(0, len(missing), EMBED_BATCH):
                batch = missing[start : start + EMBED_BATCH]
                vectors = np.asarray(embed([unique_texts[i] for i in batch]), dtype=np.float32)
                if (
                    vectors.shape[0] != len(batch)
                    or vectors.ndim != 2
                    or not np.all(np.isfinite(vectors))
                ):
                    raise ValueError(
                        f"embedder returned an unusable matrix of shape {vectors.shape}"
                    )
                dim = vectors.shape[1]
                self.data_store.batch_write(
                    [(keys[i], v.tobytes()) for i, v in zip(batch, vectors, strict=True)]
                )
        present = next((p for p in cached if p is not None), None)
        if dim is None:
            dim = len(present) // 4 if present is not None else 0
        self.data_store.write(
            layout.pair_texts_key(record["generation"]), layout.encode_json(texts)
        )
        fingerprint = xxh3_64_hexdigest(layout.encode_json([choice.model_id, texts]))
        record["embeddings"] = {"model": choice.model_id, "dim": dim, "fingerprint": fingerprint}
        self._save_manifest()
        return EmbeddingReport(
            model=choice.model_id,
            n_pairs=len(pairs),
            dim=dim,
            cache_hits=len(unique_texts) - len(missing),
            embedded=len(missing),
            texts_with_taxonomy=sum(1 for p in pairs if p.concept in taxonomy),
            seconds=round(time.perf_counter() - started, 4),
            example_texts=texts[:5],
        )

    def _raw_embeddings(self, record: dict) -> np.ndarray:
        info = record.get("embeddings")
        if not info:
            raise RuntimeError("no embeddings for this generation: run generate_embeddings() first")
        texts = layout.decode_json(
            self.data_store.read(layout.pair_texts_key(record["generation"]))
        )
        payloads = self._batch_read([layout.embedding_cache_key(info["model"], t) for t in texts])
        if any(p is None for p in payloads):
            raise LookupError(
                "embedding cache entries are missing: run generate_embeddings() again"
            )
        return (
            np.vstack([np.frombuffer(p, dtype=np.float32) for p in payloads])
            if payloads
            else np.zeros((0, info["dim"]), np.float32)
        )

    # ------------------------------------------------------------------ step 4: scalers

    def fit_scalers(self, kind: str = "robust") -> ScalerReport:
        """One scaler per pair over all of its values (see preprocessing/scalers.py for the rules)."""
        if kind not in scaler_fns.SCALER_KINDS:
            raise ValueError(f"scaler kind must be one of {scaler_fns.SCALER_KINDS}, got {kind!r}")
        started = time.perf_counter()
        record = self._working()
        generation, n_pairs = record["generation"], record["n_pairs"]
        counts = self._pair_counts(record)
        kinds = np.zeros(n_pairs, dtype=np.uint8)
        center = np.zeros(n_pairs, dtype=np.float64)
        scale = np.ones(n_pairs, dtype=np.float64)
        zero_iqr = doubled = fallback = 0
        pickles: list[tuple[bytes, bytes]] = []
        for first, last in _groups_by_size(counts, SCALER_GROUP_CELLS):
            grouped = self._grouped_pair_values(generation, first, last, counts)
            params = scaler_fns.robust_params(grouped)
            center[first:last], scale[first:last] = params.center, params.scale
            zero_iqr += int(params.zero_iqr.sum())
            doubled += int(params.doubled.sum())
            if kind == "quantile":
                for k in range(last - first):
                    s = grouped.starts[k]
                    fitted = scaler_fns.fit_quantile_scaler(
                        grouped.values[s : s + grouped.counts[k]]
                    )
                    if fitted is None:
                        fallback += 1
                        continue
                    kinds[first + k] = layout.SCALER_KIND_CODES["quantile"]
                    pickles.append(
                        (layout.scaler_key(generation, first + k), pickle.dumps(fitted, protocol=5))
                    )
                    if len(pickles) >= 512:
                        self.data_store.batch_write(pickles)
                        pickles = []
        if pickles:
            self.data_store.batch_write(pickles)
        params_payload = layout.encode_scaler_params(kinds, center, scale)
        self.data_store.write(layout.scaler_params_key(generation), params_payload)
        record["scalers"] = {
            "kind": kind,
            "fingerprint": xxh3_64_hexdigest(params_payload + kind.encode()),
        }
        self._save_manifest()
        return ScalerReport(
            kind=kind,
            n_pairs=n_pairs,
            single_value_pairs=int((counts == 1).sum()),
            zero_iqr_pairs=zero_iqr,
            robust_fallback_pairs=fallback,
            scale_doublings=doubled,
            seconds=round(time.perf_counter() - started, 4),
        )

    def _grouped_pair_values(
        self, generation: int, first: int, last: int, counts: np.ndarray
    ) -> scaler_fns.GroupedValues:
        payloads = self._batch_read(
            [layout.pair_index_key(generation, p) for p in range(first, last)]
        )
        values = []
        for pair_id, payload in zip(range(first, last), payloads, strict=True):
            if payload is None:
                raise LookupError(
                    f"value index of pair {pair_id} (generation {generation}) is missing"
                )
            values.append(layout.decode_pair_index(payload)[0])
        group_counts = counts[first:last]
        starts = np.concatenate([[0], np.cumsum(group_counts)[:-1]]).astype(np.int64)
        return scaler_fns.GroupedValues(
            np.concatenate(values), starts, group_counts.astype(np.int64)
        )

    def load_scalers(self) -> list:
        """The fitted sklearn scaler of every live pair, indexed by pair_id."""
        return self._scalers(self._require_live())

    def _scalers(self, record: dict) -> list:
        if not record.get("scalers"):
            raise RuntimeError("no scalers fitted for this generation: run fit_scalers() first")
        memo_key = ("scalers", record["generation"], record["scalers"]["fingerprint"])
        if memo_key not in self._memo:
            payload = self.data_store.read(layout.scaler_params_key(record["generation"]))
            kinds, center, scale = layout.decode_scaler_params(payload)
            scalers: list = [
                scaler_fns.make_robust_scaler(c, s)
                for c, s in zip(center.tolist(), scale.tolist(), strict=True)
            ]
            quantile_ids = np.flatnonzero(kinds == layout.SCALER_KIND_CODES["quantile"]).tolist()
            pickled = self._batch_read(
                [layout.scaler_key(record["generation"], p) for p in quantile_ids]
            )
            for pair_id, blob in zip(quantile_ids, pickled, strict=True):
                if blob is None:
                    raise LookupError(f"scaler of pair {pair_id} is missing")
                scalers[pair_id] = pickle.loads(blob)
            self._memo[memo_key] = scalers
        return self._memo[memo_key]

    # ------------------------------------------------------------------ step 5: PCA

    def fit_pca(
        self,
        variance: float | None = 0.95,
        n_components: int | None = None,
        *,
        plot_dir: str | Path | None = None,
        make_plots: bool = True,
    ) -> PcaReport:
        """Exact float64 PCA of the pair embeddings; stores the model and reduced embeddings.

        The report carries two PNGs (explained-variance curve, 2-D scatter of the pairs), also
        written to `plot_dir` when given; `make_plots=False` skips them (about a second).
        """
        from narrative_pipeline.preprocessing import pca as pca_fns
        from narrative_pipeline.preprocessing import plots

        started = time.perf_counter()
        record = self._working()
        raw = self._raw_embeddings(record)
        fit = pca_fns.fit_pca(raw, variance=variance, n_components=n_components)
        reduced = pca_fns.reduce(fit.model, raw)
        generation = record["generation"]
        model_bytes = pickle.dumps(fit.model, protocol=5)
        self.data_store.batch_write(
            [
                (layout.pca_model_key(generation), model_bytes),
                (layout.pca_reduced_key(generation), layout.encode_matrix(reduced)),
            ]
        )
        record["pca"] = {
            "n_components": fit.n_components,
            "embeddings_fingerprint": record["embeddings"]["fingerprint"],
            "fingerprint": xxh3_64_hexdigest(model_bytes),
        }
        self._save_manifest()
        target = None if n_components is not None else variance
        pngs = {"pca_explained_variance": b"", "pca_pair_scatter": b""}
        if make_plots:
            units = [p.uom for p in self._pairs(record)]
            pngs = {
                "pca_explained_variance": plots.explained_variance_png(
                    fit.explained_variance_ratio_full, fit.n_components, target
                ),
                "pca_pair_scatter": plots.scatter_png(reduced[:, :2], units),
            }
        paths = [str(p) for p in plots.save_pngs(pngs, plot_dir)] if plot_dir and make_plots else []
        return PcaReport(
            n_pairs=raw.shape[0],
            input_dim=raw.shape[1],
            n_components=fit.n_components,
            explained_variance=float(fit.explained_variance_ratio_full[: fit.n_components].sum()),
            configured_variance=target,
            configured_components=n_components,
            seconds=round(time.perf_counter() - started, 4),
            explained_variance_png=pngs["pca_explained_variance"],
            scatter_png=pngs["pca_pair_scatter"],
            plot_paths=paths,
        )

    def generate_pca_embeddings(
        self, variance: float | None = 0.95, n_components: int | None = None, **kwargs: Any
    ) -> PcaReport:
        """The original's name for step 5 (`fit_pca`)."""
        return self.fit_pca(variance, n_components, **kwargs)

    def load_pca_model(self) -> Any:
        """The live sklearn PCA, or None when none was fitted (as the original)."""
        live = self._live()
        if not live or not live.get("pca"):
            return None
        payload = self.data_store.read(layout.pca_model_key(live["generation"]))
        return None if payload is None else pickle.loads(payload)

    # ------------------------------------------------------------------ step 6: triplets

    def write_triplets(self) -> TripletReport:
        """Scaled value of every cell with its pair's scaler; then this generation goes live."""
        started = time.perf_counter()
        record = self._working()
        generation = record["generation"]
        scalers = self._scalers(record)
        payload = self.data_store.read(layout.scaler_params_key(generation))
        kinds, center, scale = layout.decode_scaler_params(payload)
        quantile_kind = layout.SCALER_KIND_CODES["quantile"]
        has_quantile = bool((kinds == quantile_kind).any())
        pending_writes: list[tuple[bytes, bytes]] = []
        for chunk, cols in build.iter_chunk_columns(
            self.data_store, generation, record["n_chunks"], ("pair_id", "unscaled")
        ):
            pid, values = cols["pair_id"], cols["unscaled"]
            scaled = scaler_fns.robust_transform(values, center[pid], scale[pid])
            if has_quantile:
                _apply_quantile_scalers(scaled, pid, values, kinds == quantile_kind, scalers)
            pending_writes.append(
                (layout.cell_column_key(generation, "scaled", chunk), scaled.tobytes())
            )
            if len(pending_writes) >= build.CHUNKS_PER_READ:
                self.data_store.batch_write(pending_writes)
                pending_writes = []
        if pending_writes:
            self.data_store.batch_write(pending_writes)
        record["triplets"] = {"scalers_fingerprint": record["scalers"]["fingerprint"]}
        self._promote(record)
        seconds = time.perf_counter() - started
        return TripletReport(
            generation=generation,
            n_triplets=record["n_cells"],
            n_pairs=record["n_pairs"],
            scaler_kind=record["scalers"]["kind"],
            seconds=round(seconds, 4),
            cells_per_second=record["n_cells"] / seconds if seconds else 0.0,
        )

    def _promote(self, record: dict) -> None:
        """Make `record` the live generation, then delete the one it replaces."""
        manifest = self._read_manifest()
        old = manifest["live"]
        if manifest["pending"] is record:
            manifest["live"], manifest["pending"] = record, None
            if old is not None and old["generation"] != record["generation"]:
                manifest["garbage"].append(old)
        self._save_manifest()
        self.data_store.batch_write(
            [
                (layout.TRIPLET_COUNT_KEY, layout.encode_count(record["n_cells"])),
                (layout.PAIR_COUNT_KEY, layout.encode_count(record["n_pairs"])),
            ]
        )
        self._cache.clear()
        for stale in list(manifest["garbage"]):
            self._delete_generation(stale)
            manifest["garbage"].remove(stale)
        self._save_manifest()

    def _delete_generation(self, record: dict) -> None:
        """Delete every key a generation wrote (the embedding cache is shared and kept)."""
        generation = record["generation"]
        if record.get("incomplete"):
            n_chunks, n_pairs = self._probe_incomplete(generation)
        else:
            n_chunks, n_pairs = record.get("n_chunks", 0), record.get("n_pairs", 0)
        keys = [
            layout.cell_column_key(generation, c, k)
            for k in range(n_chunks)
            for c in layout.CELL_COLUMNS
        ]
        keys += [layout.pair_index_key(generation, p) for p in range(n_pairs)]
        if (record.get("scalers") or {}).get("kind") == "quantile":
            keys += [layout.scaler_key(generation, p) for p in range(n_pairs)]
        keys += [
            layout.pairs_key(generation),
            layout.pair_texts_key(generation),
            layout.scaler_params_key(generation),
            layout.pca_model_key(generation),
            layout.pca_reduced_key(generation),
        ]
        for key in keys:
            self.data_store.delete(key)

    def _probe_incomplete(self, generation: int) -> tuple[int, int]:
        """(chunks written, pair ids used) of a build that stopped midway, read from the store."""
        n_chunks, max_pair = 0, -1
        while True:
            payloads = self.data_store.batch_read(
                [
                    layout.cell_column_key(generation, "pair_id", k)
                    for k in range(n_chunks, n_chunks + 64)
                ]
            )
            present = [p for p in payloads if p is not None]
            for payload in present:
                ids = np.frombuffer(payload, dtype=layout.CELL_COLUMNS["pair_id"])
                max_pair = max(max_pair, int(ids.max()) if len(ids) else -1)
            n_chunks += len(present)
            if len(present) < 64:
                return n_chunks + 1, max_pair + 1  # +1: a chunk's other columns may precede it

    # ------------------------------------------------------------------ reads

    def get_triplet_count(self) -> int:
        """Number of live cells (0 before the first ingest)."""
        return layout.decode_count(self.data_store.read(layout.TRIPLET_COUNT_KEY)) or 0

    def get_pair_count(self) -> int:
        """Number of live (concept, unit) pairs (0 before the first ingest)."""
        return layout.decode_count(self.data_store.read(layout.PAIR_COUNT_KEY)) or 0

    def iterate_concept_unit_pairs(self) -> Iterator[tuple[int, ConceptUnitPair]]:
        """(pair_id, ConceptUnitPair(concept, uom)) for every live pair, by pair_id."""
        live = self._live()
        if live is None:
            return
        yield from enumerate(self._pairs(live))

    def get_embedding_matrix(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """(PCA-reduced embeddings float64 [n_pairs, k], [(concept, unit)] by pair_id)."""
        live = self._require_live()
        pca = live.get("pca")
        embeddings = live.get("embeddings")
        if not pca or not embeddings or pca["embeddings_fingerprint"] != embeddings["fingerprint"]:
            raise RuntimeError(
                "no PCA embeddings for the live pairs: run generate_embeddings() and fit_pca()"
            )
        return self._reduced(live), [tuple(p) for p in self._pairs(live)]

    def _reduced(self, record: dict) -> np.ndarray:
        memo_key = ("reduced", record["generation"], record["pca"]["fingerprint"])
        if memo_key not in self._memo:
            payload = self.data_store.read(layout.pca_reduced_key(record["generation"]))
            if payload is None:
                raise LookupError("PCA-reduced embeddings are missing")
            self._memo[memo_key] = layout.decode_matrix(payload)
        return self._memo[memo_key]

    def read_cell_range(self, start: int, stop: int) -> CellArrays:
        """Columns of cells start..stop-1 (clipped to the live count), as numpy arrays."""
        live = self._require_fresh_triplets()
        start, stop = max(0, int(start)), min(int(stop), live["n_cells"])
        if stop <= start:
            return self._empty_cells()
        out = {
            name: np.empty(stop - start, dtype=dtype) for name, dtype in layout.CELL_COLUMNS.items()
        }
        first, last = start >> layout.CHUNK_SHIFT, (stop - 1) >> layout.CHUNK_SHIFT
        chunks = list(range(first, last + 1))
        for group in range(0, len(chunks), self._cache.capacity):
            batch = chunks[group : group + self._cache.capacity]
            for chunk, slot in zip(
                batch, self._cache.slots_for(self.data_store, live, batch), strict=True
            ):
                base = chunk << layout.CHUNK_SHIFT
                lo, hi = max(start, base), min(stop, base + layout.CHUNK_CELLS)
                for name in layout.CELL_COLUMNS:
                    out[name][lo - start : hi - start] = self._cache.columns[name][
                        slot, lo - base : hi - base
                    ]
        return CellArrays(i_cell=np.arange(start, stop, dtype=np.int64), **out)

    def read_cells(self, indices: Sequence[int] | np.ndarray) -> CellArrays:
        """Columns of the given cells, in the order given (repeats allowed)."""
        live = self._require_fresh_triplets()
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size == 0:
            return self._empty_cells()
        n_cells = live["n_cells"]
        if idx.min() < 0 or idx.max() >= n_cells:
            bad = idx[(idx < 0) | (idx >= n_cells)][0]
            raise IndexError(f"cell index {bad} out of range 0..{n_cells - 1}")
        chunk_of = idx >> layout.CHUNK_SHIFT
        chunk_ids = np.flatnonzero(np.bincount(chunk_of, minlength=live["n_chunks"]))
        if len(chunk_ids) <= self._cache.capacity:
            return CellArrays(i_cell=idx, **self._gather(live, idx, chunk_of, chunk_ids))
        # More chunks than the cache holds: gather a cache-full of chunks at a time.
        out = {name: np.empty(idx.size, dtype=dtype) for name, dtype in layout.CELL_COLUMNS.items()}
        order = np.argsort(chunk_of, kind="stable")
        bounds = np.searchsorted(chunk_of[order], chunk_ids[:: self._cache.capacity])
        bounds = np.append(bounds, idx.size)
        for k in range(len(bounds) - 1):
            positions = order[bounds[k] : bounds[k + 1]]
            group_ids = np.unique(chunk_of[positions])
            part = self._gather(live, idx[positions], chunk_of[positions], group_ids)
            for name in layout.CELL_COLUMNS:
                out[name][positions] = part[name]
        return CellArrays(i_cell=idx, **out)

    def _gather(
        self, record: dict, idx: np.ndarray, chunk_of: np.ndarray, chunk_ids: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Cell columns for `idx`, all of whose chunks (`chunk_ids`) fit in the cache at once."""
        slots = self._cache.slots_for(self.data_store, record, chunk_ids.tolist())
        slot_of_chunk = np.zeros(int(chunk_ids[-1]) + 1, dtype=np.int64)
        slot_of_chunk[chunk_ids] = slots
        flat = slot_of_chunk[chunk_of] * layout.CHUNK_CELLS + (idx & (layout.CHUNK_CELLS - 1))
        return {name: self._cache.columns[name].reshape(-1)[flat] for name in layout.CELL_COLUMNS}

    @staticmethod
    def _empty_cells() -> CellArrays:
        return CellArrays(
            i_cell=np.zeros(0, dtype=np.int64),
            **{n: np.zeros(0, dtype=d) for n, d in layout.CELL_COLUMNS.items()},
        )

    def batch_lookup_by_indices(self, indices: Sequence[int] | np.ndarray) -> list[Cell]:
        """One `Cell` per index: arrays are fetched for all indices at once, then objects built."""
        cells = self.read_cells(indices)
        live = self._live()
        pairs = self._pairs(live)
        scalers = self._scalers(live)
        rows = self._embedding_rows(live)
        with _gc_paused():  # hundreds of thousands of new objects would trigger needless GC passes
            return self._build_cells(cells, pairs, scalers, rows)

    @staticmethod
    def _build_cells(cells: CellArrays, pairs: list, scalers: list, rows: list) -> list[Cell]:
        return [
            Cell(i, p, pairs[p][0], pairs[p][1], u, s, rows[p], scalers[p], k)
            for i, p, u, s, k in zip(
                cells.i_cell.tolist(),
                cells.pair_id.tolist(),
                cells.unscaled.tolist(),
                cells.scaled.tolist(),
                cells.cell_key.tolist(),
                strict=True,
            )
        ]

    def _embedding_rows(self, record: dict) -> list:
        """Per pair, its PCA-reduced embedding row (None for every pair when no PCA is stored)."""
        pca = record.get("pca")
        if not pca:
            return [None] * record["n_pairs"]
        memo_key = ("rows", record["generation"], pca["fingerprint"])
        if memo_key not in self._memo:
            self._memo[memo_key] = list(self._reduced(record))
        return self._memo[memo_key]

    def lookup_by_index(self, i_cell: int) -> Cell:
        return self.batch_lookup_by_indices([i_cell])[0]

    def lookup_by_triplet(self, concept: str, uom: str, value: float) -> Cell:
        """The cell holding this (concept, unit, value); the first by i_cell if several do.

        The unit is matched upper-cased, as readers store it. Raises KeyError when absent.
        """
        live = self._require_fresh_triplets()
        pair_id = self._pair_ids(live).get(
            (concept, uom.upper()), self._pair_ids(live).get((concept, uom))
        )
        if pair_id is not None:
            payload = self.data_store.read(layout.pair_index_key(live["generation"], pair_id))
            if payload is None:
                raise LookupError(f"value index of pair {pair_id} is missing")
            values, i_cells = layout.decode_pair_index(payload)
            pos = int(np.searchsorted(values, float(value), side="left"))
            if pos < len(values) and values[pos] == float(value):
                return self.lookup_by_index(int(i_cells[pos]))
        raise KeyError(f"triplet ({concept!r}, {uom!r}, {value!r}) not found")

    def _pair_ids(self, record: dict) -> dict[tuple[str, str], int]:
        memo_key = ("pair_ids", record["generation"])
        if memo_key not in self._memo:
            self._memo[memo_key] = {tuple(p): i for i, p in enumerate(self._pairs(record))}
        return self._memo[memo_key]

    # ------------------------------------------------------------------ helpers

    def _batch_read(self, keys: list[bytes]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for first in range(0, len(keys), READ_KEYS_BATCH):
            out.extend(self.data_store.batch_read(keys[first : first + READ_KEYS_BATCH]))
        return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _add_counts(counts: np.ndarray, pair_id: np.ndarray, n_pairs: int) -> np.ndarray:
    frame_counts = np.bincount(pair_id, minlength=n_pairs)
    if len(counts) < n_pairs:
        counts = np.concatenate([counts, np.zeros(n_pairs - len(counts), dtype=np.int64)])
    return counts + frame_counts


def _groups_by_size(counts: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive pair-id ranges [first, last) holding about `limit` values each (at least one pair)."""
    first, total = 0, 0
    for pair_id, n in enumerate(counts.tolist()):
        if total and total + n > limit:
            yield first, pair_id
            first, total = pair_id, 0
        total += n
    if first < len(counts):
        yield first, len(counts)


def _apply_quantile_scalers(
    scaled: np.ndarray, pid: np.ndarray, values: np.ndarray, is_quantile: np.ndarray, scalers: list
) -> None:
    """Overwrite the cells of quantile pairs with their scaler's transform, one call per pair."""
    cells = np.flatnonzero(is_quantile[pid])
    if not len(cells):
        return
    order = cells[np.argsort(pid[cells], kind="stable")]
    uniq, starts = np.unique(pid[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for pair_id, s, e in zip(uniq.tolist(), starts.tolist(), ends.tolist(), strict=True):
        sel = order[s:e]
        scaled[sel] = scaler_fns.transform_column(scalers[pair_id], values[sel])


def _taxonomy_texts(db: Any) -> dict[str, tuple[str | None, str | None]]:
    """concept name -> (label, documentation) from the database's taxonomy, if it has one."""
    if db is None:
        return {}
    frame = db.taxonomy_frame()
    if frame is None or not len(frame):
        return {}
    labels = frame["label"].where(frame["label"].notna(), None).tolist()
    docs = frame["documentation"].where(frame["documentation"].notna(), None).tolist()
    return {
        name: (label, doc)
        for name, label, doc in zip(frame["name"].tolist(), labels, docs, strict=True)
        if label or doc
    }


def _fact_batches(db: Any, assigner: build.PairAssigner) -> Iterator[tuple]:
    """(pair_id, values, cell_keys) per batch of facts in database order: from the
    database's own streaming reader when it has one (DbUsGaap.iter_fact_codes: no string
    object per fact), else from frames."""
    if hasattr(db, "iter_fact_codes"):
        for codes in db.iter_fact_codes():
            yield (
                assigner.assign_codes(codes),
                np.asarray(codes.values, dtype=np.float64),
                build.cell_keys_from_codes(codes),
            )
        return
    for frame in build.iter_fact_frames(db):
        yield (
            assigner.assign(frame["concept"], frame["unit"]),
            np.asarray(frame["value"], dtype=np.float64),
            build.cell_keys(frame),
        )
