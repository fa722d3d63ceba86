"""The evaluation asset: how good the Stage 1 checkpoint is on held-out data, against baselines.

Reads the best checkpoint `stage1_checkpoint` wrote, scores it with `training.evaluation`
(held-out tickers and the cell-key split, original units, same-run baselines), writes
<data_dir>/training/evaluation.json, and reports a model-vs-baselines table, two plots and the
model checks (checks.py).
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations at runtime.

import dagster as dg

from narrative_pipeline.assets.metadata import markdown_table, png_markdown, save_png, timed
from narrative_pipeline.assets.training import TRAINING_GROUP
from narrative_pipeline.checks import evaluation_check_results, evaluation_check_specs
from narrative_pipeline.resources import PathsResource, StoreResource

EVALUATION_FILE = "evaluation.json"
TABLE_FIGURES = ("value_median_rel_error", "value_within_1pct", "value_within_10pct",
                 "pair_median_rel_error", "pair_r2_median", "embedding_cosine")  # fmt: skip


def comparison_table(evaluation: dict) -> dg.MetadataValue:
    """Rows: model and baselines; columns: the headline split's figures."""
    rows = [("model", evaluation["model"])] + [
        (f"baseline: {name}", figures) for name, figures in evaluation["baselines"].items()
    ]
    return markdown_table(
        ["", *TABLE_FIGURES],
        [[label, *(figures.get(k, "n/a") for k in TABLE_FIGURES)] for label, figures in rows],
    )


@dg.asset(
    deps=["stage1_checkpoint"],
    group_name=TRAINING_GROUP,
    kinds={"pytorch", "python"},
    check_specs=evaluation_check_specs("stage1_evaluation"),
    description=(
        "Held-out evaluation of the Stage 1 checkpoint in original units (held-out tickers and "
        "the cell-key split) against a per-pair median predictor and a same-size PCA "
        "autoencoder fitted on the same training cells. Writes training/evaluation.json."
    ),
)
def stage1_evaluation(
    context: dg.AssetExecutionContext, store: StoreResource, paths: PathsResource
) -> dg.MaterializeResult:
    from narrative_pipeline.training.evaluation import evaluate_checkpoint, evaluation_json, judge
    from narrative_pipeline.training.evaluation_plots import error_by_pair_png, latent_map_png

    training_dir = paths.subdir("training")
    checkpoint = training_dir / "checkpoints" / "stage1_resume.ckpt"
    if not checkpoint.is_file():  # no validated best yet (e.g. stopped inside the first epoch)
        checkpoint = training_dir / "checkpoints" / "last.ckpt"
    metadata: dict = {}
    with timed(metadata, "evaluation_seconds"), store.us_gaap_store(read_only=True) as us_gaap:
        evaluation, extras = evaluate_checkpoint(checkpoint, us_gaap)
    out = training_dir / EVALUATION_FILE
    out.write_text(evaluation_json(evaluation))
    model, split = evaluation["model"], evaluation["split"]
    latent = evaluation["latent"]
    context.log.info(
        "evaluation on %s (%s), latent %d (configured %d, input width %d): value median rel "
        "error %.4g (PCA %.4g, pair median %.4g), cosine %.4f",
        evaluation["headline_split"],
        ", ".join(split["heldout_tickers"]) or "no held-out tickers",
        latent["effective"],
        latent["configured"],
        latent["input_width"],
        model.get("value_median_rel_error", float("nan")),
        evaluation["baselines"]["pca"].get("value_median_rel_error", float("nan")),
        evaluation["baselines"]["pair_median"].get("value_median_rel_error", float("nan")),
        model.get("embedding_cosine", float("nan")),
    )
    metadata["model_vs_baselines"] = comparison_table(evaluation)
    metadata["headline_split"] = evaluation["headline_split"]
    metadata["latent_dim"] = latent["effective"]
    metadata["configured_latent_dim"] = latent["configured"]
    metadata["heldout_tickers"] = ", ".join(split["heldout_tickers"]) or "none"
    metadata["cells"] = dg.MetadataValue.json(split["cells"])
    metadata["worst_pairs"] = dg.MetadataValue.json(model.get("worst_pairs", []))
    for key in TABLE_FIGURES:  # flat numbers: the UI plots them across runs
        if isinstance(model.get(key), int | float):
            metadata[f"model_{key}"] = float(model[key])
    metadata["evaluation_json"] = dg.MetadataValue.path(str(out))
    plots_dir = paths.subdir("plots")
    for name, title, png in (
        ("stage1_error_by_pair.png", "value error by pair", error_by_pair_png(evaluation, extras["pair_names"])),
        ("stage1_latent_map.png", "latents by concept group", latent_map_png(extras)),
    ):  # fmt: skip
        save_png(png, plots_dir, name)
        metadata[f"plot: {title}"] = png_markdown(png, title)
    return dg.MaterializeResult(
        metadata=metadata, check_results=evaluation_check_results(judge(evaluation))
    )
