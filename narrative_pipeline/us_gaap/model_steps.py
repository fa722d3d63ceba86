"""Steps 3-6 on the working generation: pair embeddings (cached by model and text), per-pair
scalers, PCA of the embeddings, and `write_triplets`, which makes the generation live.

Scaled values are computed when cells are read (layout.py), so `write_triplets` writes no cell:
it records which scalers the live values use and switches the manifest.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from xxhash import xxh3_64_hexdigest

from narrative_pipeline.db.protocol import FactSource
from narrative_pipeline.preprocessing import scalers as scaler_fns
from narrative_pipeline.preprocessing.embeddings import (
    ModelChoice,
    load_sentence_embedder,
    pair_text,
    resolve_model,
)
from narrative_pipeline.us_gaap import layout
from narrative_pipeline.us_gaap.generations import StoreState
from narrative_pipeline.us_gaap.reports import (
    EmbeddingReport,
    PcaReport,
    ScalerReport,
    TripletReport,
)

EMBED_BATCH = 256
SCALER_GROUP_CELLS = 2_000_000  # values held at once while fitting scalers

Embedder = Callable[[Sequence[str]], np.ndarray]


# ---------------------------------------------------------------------- step 3: embeddings
def generate_embeddings(
    state: StoreState,
    db: FactSource | None,
    model_name_or_path: str | None,
    embedder: Embedder | None,
    model_id: str | None,
) -> EmbeddingReport:
    """Embed each pair's text; texts already embedded by the same model come from the cache."""
    started = time.perf_counter()
    record = state.working()
    pairs = state.pairs(record)
    taxonomy = taxonomy_texts(db)
    texts = [pair_text(p.concept, p.uom, *taxonomy.get(p.concept, (None, None))) for p in pairs]
    choice = (
        ModelChoice(model_id or "custom-embedder", "")
        if embedder
        else resolve_model(model_name_or_path)
    )
    unique_texts = list(dict.fromkeys(texts))
    keys = [layout.embedding_cache_key(choice.model_id, t) for t in unique_texts]
    cached = state.batch_read(keys)
    missing = [i for i, payload in enumerate(cached) if payload is None]
    dim = None
    if missing:
        embed = embedder or load_sentence_embedder(choice)
        dim = _embed_missing(state, embed, unique_texts, keys, missing)
    present = next((p for p in cached if p is not None), None)
    if dim is None:
        dim = len(present) // 4 if present is not None else 0
    state.data_store.write(layout.pair_texts_key(record["generation"]), layout.encode_json(texts))
    fingerprint = xxh3_64_hexdigest(layout.encode_json([choice.model_id, texts]))
    record["embeddings"] = {"model": choice.model_id, "dim": dim, "fingerprint": fingerprint}
    state.save()
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


def _embed_missing(
    state: StoreState, embed: Embedder, texts: list[str], keys: list[bytes], missing: list[int]
) -> int:
    dim = 0
    for start in range(0, len(missing), EMBED_BATCH):
        batch = missing[start : start + EMBED_BATCH]
        vectors = np.asarray(embed([texts[i] for i in batch]), dtype=np.float32)
        if vectors.shape[0] != len(batch) or vectors.ndim != 2 or not np.all(np.isfinite(vectors)):
            raise ValueError(f"embedder returned an unusable matrix of shape {vectors.shape}")
        dim = vectors.shape[1]
        state.data_store.batch_write(
            [(keys[i], v.tobytes()) for i, v in zip(batch, vectors, strict=True)]
        )
    return dim


def raw_embeddings(
    state: StoreState, record: dict, rows: Sequence[int] | None = None
) -> np.ndarray:
    """The (unreduced) embedding of every pair, or of the pairs in `rows`."""
    info = record.get("embeddings")
    if not info:
        raise RuntimeError("no embeddings for this generation: run generate_embeddings() first")
    texts = layout.decode_json(state.data_store.read(layout.pair_texts_key(record["generation"])))
    if rows is not None:
        texts = [texts[i] for i in rows]
    payloads = state.batch_read([layout.embedding_cache_key(info["model"], t) for t in texts])
    found = [p for p in payloads if p is not None]
    if len(found) < len(payloads):
        raise LookupError("embedding cache entries are missing: run generate_embeddings() again")
    return (
        np.vstack([np.frombuffer(p, dtype=np.float32) for p in found])
        if found
        else np.zeros((0, info["dim"]), np.float32)
    )


# ---------------------------------------------------------------------- step 4: scalers
def fit_scalers(state: StoreState, kind: str) -> ScalerReport:
    """One scaler per pair over all of its values (preprocessing/scalers.py has the rules)."""
    if kind not in scaler_fns.SCALER_KINDS:
        raise ValueError(f"scaler kind must be one of {scaler_fns.SCALER_KINDS}, got {kind!r}")
    started = time.perf_counter()
    record = state.working()
    fit = ScalerFit(state, record, kind)
    fit.refit(np.arange(record["n_pairs"]))
    fit.save()
    return fit.report(started, refitted_pairs=None)


class ScalerFit:
    """Scaler parameters of a record, refitted for some pairs (all of them in a full fit);
    quantile pickles go under the generation of each pair's value index."""

    def __init__(self, state: StoreState, record: dict, kind: str, base: dict | None = None):
        self.state, self.record, self.kind = state, record, kind
        n_pairs = record["n_pairs"]
        self.kinds = np.zeros(n_pairs, dtype=np.uint8)
        self.center = np.zeros(n_pairs, dtype=np.float64)
        self.scale = np.ones(n_pairs, dtype=np.float64)
        if base is not None:  # an incremental update starts from the live parameters
            kinds, center, scale = state.scaler_params(base)
            n = len(kinds)
            self.kinds[:n], self.center[:n], self.scale[:n] = kinds, center, scale
        self.zero_iqr = self.doubled = self.fallback = 0
        self.gens = state.pair_index_generations(record)

    def refit(self, pair_ids: np.ndarray) -> None:
        counts = self.state.pair_counts(self.record)
        pair_ids = np.asarray(pair_ids, dtype=np.int64)
        pair_ids = pair_ids[counts[pair_ids] > 0]
        for group in _groups_by_size(pair_ids, counts, SCALER_GROUP_CELLS):
            grouped = self._grouped_values(group, counts)
            params = scaler_fns.robust_params(grouped)
            self.center[group], self.scale[group] = params.center, params.scale
            self.kinds[group] = layout.SCALER_KIND_CODES["robust"]
            self.zero_iqr += int(params.zero_iqr.sum())
            self.doubled += int(params.doubled.sum())
            if self.kind == "quantile":
                self._fit_quantile(group, grouped)

    def _fit_quantile(self, group: np.ndarray, grouped: scaler_fns.GroupedValues) -> None:
        pickles = []
        for k, pair_id in enumerate(group.tolist()):
            s = grouped.starts[k]
            fitted = scaler_fns.fit_quantile_scaler(grouped.values[s : s + grouped.counts[k]])
            if fitted is None:
                self.fallback += 1
                continue
            self.kinds[pair_id] = layout.SCALER_KIND_CODES["quantile"]
            key = layout.scaler_key(int(self.gens[pair_id]), pair_id)
            pickles.append((key, pickle.dumps(fitted, protocol=5)))
            if len(pickles) >= 512:
                self.state.data_store.batch_write(pickles)
                pickles = []
        if pickles:
            self.state.data_store.batch_write(pickles)

    def _grouped_values(self, group: np.ndarray, counts: np.ndarray) -> scaler_fns.GroupedValues:
        indexes = self.state.pair_indexes(self.record, group.tolist())
        values = [pair_values for pair_values, _ in indexes]
        group_counts = counts[group]
        starts = np.concatenate([[0], np.cumsum(group_counts)[:-1]]).astype(np.int64)
        return scaler_fns.GroupedValues(
            np.concatenate(values), starts, group_counts.astype(np.int64)
        )

    def report(self, started: float, refitted_pairs: int | None) -> ScalerReport:
        counts = self.state.pair_counts(self.record)
        return ScalerReport(
            kind=self.kind,
            n_pairs=self.record["n_pairs"],
            single_value_pairs=int((counts == 1).sum()),
            zero_iqr_pairs=self.zero_iqr,
            robust_fallback_pairs=self.fallback,
            scale_doublings=self.doubled,
            seconds=round(time.perf_counter() - started, 4),
            refitted_pairs=refitted_pairs,
        )

    def save(self) -> None:
        payload = layout.encode_scaler_params(self.kinds, self.center, self.scale)
        self.state.data_store.write(layout.scaler_params_key(self.record["generation"]), payload)
        self.record["scalers"] = {
            "kind": self.kind,
            "fingerprint": xxh3_64_hexdigest(payload + self.kind.encode()),
        }
        self.state.save()


def _groups_by_size(pair_ids: np.ndarray, counts: np.ndarray, limit: int) -> Iterator[np.ndarray]:
    """Consecutive runs of `pair_ids` holding about `limit` values each (at least one pair)."""
    first, total = 0, 0
    sizes = counts[pair_ids].tolist()
    for k, n in enumerate(sizes):
        if total and total + n > limit:
            yield pair_ids[first:k]
            first, total = k, 0
        total += n
    if first < len(pair_ids):
        yield pair_ids[first:]


# ---------------------------------------------------------------------- step 5: PCA
def fit_pca(
    state: StoreState,
    variance: float | None,
    n_components: int | None,
    plot_dir: str | Path | None,
    make_plots: bool,
) -> PcaReport:
    """Exact float64 PCA of the pair embeddings; stores the model and reduced embeddings."""
    from narrative_pipeline.preprocessing import pca as pca_fns
    from narrative_pipeline.preprocessing import plots

    started = time.perf_counter()
    record = state.working()
    raw = raw_embeddings(state, record)
    fit = pca_fns.fit_pca(raw, variance=variance, n_components=n_components)
    reduced = pca_fns.reduce(fit.model, raw)
    target = None if n_components is not None else variance
    save_pca(state, record, fit.model, reduced, target)
    pngs = {"pca_explained_variance": b"", "pca_pair_scatter": b""}
    if make_plots:
        units = [p.uom for p in state.pairs(record)]
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


def save_pca(
    state: StoreState, record: dict, model: Any, reduced: np.ndarray, target: float | None
) -> None:
    generation = record["generation"]
    model_bytes = pickle.dumps(model, protocol=5)
    state.data_store.batch_write(
        [
            (layout.pca_model_key(generation), model_bytes),
            (layout.pca_reduced_key(generation), layout.encode_matrix(reduced)),
        ]
    )
    record["pca"] = {
        "n_components": int(model.n_components_),
        "configured_variance": target,
        "embeddings_fingerprint": record["embeddings"]["fingerprint"],
        "fingerprint": xxh3_64_hexdigest(model_bytes + layout.encode_count(len(reduced))),
    }
    state.save()


def load_pca_model(state: StoreState, record: dict | None) -> Any:
    if not record or not record.get("pca"):
        return None
    payload = state.data_store.read(layout.pca_model_key(layout.pca_model_generation(record)))
    return None if payload is None else pickle.loads(payload)


REDUCED_PARTS_MAX = 16  # a projection writes the whole matrix again past this many parts


def save_projected_pca(
    state: StoreState, record: dict, live: dict, new_rows: np.ndarray, target: float | None
) -> None:
    """After a projection with the live model: the live model and reduced rows are shared
    (referenced, not written again); only the new pairs' rows are written, as one more part
    of the matrix. An update then adds bytes in proportion to its new pairs, not n_pairs x k."""
    parts = layout.reduced_parts(live)
    if len(new_rows) and len(parts) >= REDUCED_PARTS_MAX:
        model = load_pca_model(state, live)
        save_pca(state, record, model, np.vstack([state.reduced(live), new_rows]), target)
        return
    if len(new_rows):
        generation = record["generation"]
        state.data_store.write(layout.pca_reduced_key(generation), layout.encode_matrix(new_rows))
        parts = [*parts, [generation, len(new_rows)]]
    model_generation = layout.pca_model_generation(live)
    model_bytes = state.data_store.read(layout.pca_model_key(model_generation))
    if model_bytes is None:
        raise LookupError(f"PCA model of generation {model_generation} is missing")
    n_rows = sum(int(n) for _, n in parts) if all(n is not None for _, n in parts) else None
    if n_rows is None:
        n_rows = len(state.reduced(live)) + len(new_rows)
    record["pca"] = {
        "n_components": live["pca"]["n_components"],
        "configured_variance": target,
        "embeddings_fingerprint": record["embeddings"]["fingerprint"],
        "fingerprint": xxh3_64_hexdigest(bytes(model_bytes) + layout.encode_count(n_rows)),
        "model_generation": model_generation,
        "reduced_parts": parts,
    }
    state.save()


# ---------------------------------------------------------------------- step 6: triplets
def write_triplets(state: StoreState) -> TripletReport:
    """Make the working generation live; its scaled values are its scalers' (read time)."""
    started = time.perf_counter()
    record = state.working()
    state.scaler_params(record)  # raises when no scalers were fitted
    record["triplets"] = {"scalers_fingerprint": record["scalers"]["fingerprint"]}
    state.promote(record)
    seconds = time.perf_counter() - started
    return TripletReport(
        generation=record["generation"],
        n_triplets=record["n_cells"],
        n_pairs=record["n_pairs"],
        scaler_kind=record["scalers"]["kind"],
        seconds=round(seconds, 4),
        cells_per_second=record["n_cells"] / seconds if seconds else 0.0,
    )


def taxonomy_texts(db: FactSource | None) -> dict[str, tuple[str | None, str | None]]:
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
