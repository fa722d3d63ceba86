"""Asset checks on what would silently corrupt training.

Each check is a pure `evaluate_*` function over a `UsGaapStore` (so tests can feed it crafted bad
data) wrapped by a Dagster `@asset_check`. All are blocking: a failure stops the downstream assets
of the same run, since a model trained on such data would be wrong without any error.
The store checks attach to `triplets`: steps 2-5 build a pending store generation that only
`triplets` makes live, and the store's reads see the live generation.
"""

# No `from __future__ import annotations`: Dagster reads the Config/resource annotations at runtime.

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np

from narrative_pipeline.resources import DatabaseResource, StoreResource

if TYPE_CHECKING:  # string annotations below: the checks import the store lazily
    from narrative_pipeline.db.protocol import FactSource
    from narrative_pipeline.us_gaap import UsGaapStore

ROUND_TRIP_SAMPLE = 500  # cells checked one by one, exactly as the original test did
FINITE_CHUNK = 1 << 20  # cells read per chunk when scanning every triplet
SAMPLE_SEED = 0


def evaluate_scaler_round_trip(
    us_gaap_store: "UsGaapStore", sample_size: int = ROUND_TRIP_SAMPLE, seed: int = SAMPLE_SEED
) -> dg.AssetCheckResult:
    """`scaler.transform([[unscaled]])[0][0] == scaled` exactly, on a seeded sample of cells."""
    count = int(us_gaap_store.get_triplet_count())
    if count == 0:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no triplets stored"})
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(count, size=min(count, sample_size), replace=False))
    cells = us_gaap_store.read_cells(indices.astype(np.int64))
    scalers = us_gaap_store.load_scalers()
    mismatches = []
    unchanged_nonzero = 0
    for i_cell, pair_id, unscaled, scaled in zip(
        indices, cells.pair_id, cells.unscaled, cells.scaled, strict=True
    ):
        again = scalers[int(pair_id)].transform(np.array([[unscaled]], dtype=np.float64))[0][0]
        if again != scaled:
            mismatches.append((int(i_cell), int(pair_id), float(unscaled), float(scaled), again))
        if unscaled != 0 and scaled == unscaled:
            unchanged_nonzero += 1
    metadata: dict[str, Any] = {
        "cells_checked": len(indices),
        "mismatches": len(mismatches),
        "nonzero_cells_left_unscaled": unchanged_nonzero,
    }
    if mismatches:
        rows = "\n".join(
            f"| {c} | {p} | {u!r} | {s!r} | {a!r} |" for c, p, u, s, a in mismatches[:10]
        )
        metadata["first_mismatches"] = dg.MetadataValue.md(
            "| i_cell | pair_id | unscaled | stored scaled | transform() |\n|---|---|---|---|---|\n"
            + rows
        )
    return dg.AssetCheckResult(passed=not mismatches, metadata=metadata)


def evaluate_triplets_finite(
    us_gaap_store: "UsGaapStore", chunk: int = FINITE_CHUNK
) -> dg.AssetCheckResult:
    """No NaN or infinity among the unscaled and scaled values of every stored cell."""
    count = int(us_gaap_store.get_triplet_count())
    bad_unscaled = bad_scaled = 0
    first_bad: list[int] = []
    for start in range(0, count, chunk):
        cells = us_gaap_store.read_cell_range(start, min(count, start + chunk))
        unscaled_ok = np.isfinite(np.asarray(cells.unscaled, dtype=np.float64))
        scaled_ok = np.isfinite(np.asarray(cells.scaled, dtype=np.float64))
        bad_unscaled += int((~unscaled_ok).sum())
        bad_scaled += int((~scaled_ok).sum())
        if len(first_bad) < 10:
            bad_positions = np.flatnonzero(~(unscaled_ok & scaled_ok))[: 10 - len(first_bad)]
            first_bad.extend(int(start + i) for i in bad_positions)
    return dg.AssetCheckResult(
        passed=bad_unscaled == 0 and bad_scaled == 0,
        metadata={
            "cells_scanned": count,
            "non_finite_unscaled": bad_unscaled,
            "non_finite_scaled": bad_scaled,
            "first_bad_cells": str(first_bad),
        },
    )


def evaluate_triplet_count(us_gaap_store: "UsGaapStore", db: "FactSource") -> dg.AssetCheckResult:
    """The store holds exactly one triplet per numeric fact in the database."""
    triplets = int(us_gaap_store.get_triplet_count())
    facts = int(db.fact_count())
    return dg.AssetCheckResult(
        passed=triplets == facts,
        metadata={
            "triplets": triplets,
            "ingested_numeric_cells": facts,
            "difference": triplets - facts,
        },
    )


def evaluate_pairs_complete(us_gaap_store: "UsGaapStore") -> dg.AssetCheckResult:
    """Every (concept, unit) pair has a finite PCA embedding and a fitted scaler."""
    pair_count = int(us_gaap_store.get_pair_count())
    matrix, pairs = us_gaap_store.get_embedding_matrix()
    matrix = np.asarray(matrix)
    scalers = us_gaap_store.load_scalers()
    missing_scalers = sum(1 for s in scalers if s is None) + max(0, pair_count - len(scalers))
    non_finite_rows = int((~np.isfinite(matrix).all(axis=1)).sum()) if matrix.size else 0
    metadata = {
        "pairs": pair_count,
        "embeddings": int(matrix.shape[0]),
        "scalers": len(scalers),
        "missing_scalers": missing_scalers,
        "non_finite_embeddings": non_finite_rows,
    }
    passed = (
        pair_count > 0
        and matrix.shape[0] == pair_count
        and len(pairs) == pair_count
        and missing_scalers == 0
        and non_finite_rows == 0
    )
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


def evaluate_pca_variance(
    kept_variance: float,
    components: int,
    target_variance: float | None,
    target_components: int | None = None,
) -> dg.AssetCheckResult:
    """The fitted PCA keeps the configured share of variance (or the configured component count).

    Run inside the `pca_model` asset (it knows its run config); blocks `triplets` on failure.
    """
    metadata: dict[str, Any] = {
        "explained_variance_kept": float(kept_variance),
        "components": int(components),
    }
    if target_components is not None:
        metadata["configured_components"] = int(target_components)
        passed = int(components) == int(target_components)
    else:
        target = 0.95 if target_variance is None else float(target_variance)
        metadata["configured_variance"] = target
        passed = float(kept_variance) >= target - 1e-9
    return dg.AssetCheckResult(
        check_name="pca_keeps_configured_variance", passed=passed, metadata=metadata
    )


def _failed_on_error(evaluate: Callable[[], dg.AssetCheckResult]) -> dg.AssetCheckResult:
    """A store that cannot answer (missing or stale data) fails the check with the reason."""
    try:
        return evaluate()
    except (LookupError, RuntimeError, ValueError) as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{type(exc).__name__}: {exc}"})


def _with_store(
    store: StoreResource, evaluate: Callable[..., dg.AssetCheckResult], *args: Any
) -> dg.AssetCheckResult:
    with store.us_gaap_store(read_only=True) as us_gaap_store:
        return evaluate(us_gaap_store, *args)


@dg.asset_check(
    asset="triplets",
    blocking=True,
    description="Exact scaler round trip: transform([[unscaled]])[0][0] == scaled on a sample.",
)
def scaler_round_trip_exact(store: StoreResource) -> dg.AssetCheckResult:
    return _failed_on_error(lambda: _with_store(store, evaluate_scaler_round_trip))


@dg.asset_check(
    asset="triplets", blocking=True, description="No NaN or infinity in unscaled or scaled values."
)
def triplets_are_finite(store: StoreResource) -> dg.AssetCheckResult:
    return _failed_on_error(lambda: _with_store(store, evaluate_triplets_finite))


@dg.asset_check(
    asset="triplets",
    blocking=True,
    description="Triplet count equals the numeric cells ingested into the database.",
)
def triplet_count_matches_facts(
    store: StoreResource, database: DatabaseResource
) -> dg.AssetCheckResult:
    db = database.get_db()
    return _failed_on_error(lambda: _with_store(store, evaluate_triplet_count, db))


@dg.asset_check(
    asset="triplets",
    blocking=True,
    description="Every (concept, unit) pair has a finite PCA embedding and a fitted scaler.",
)
def every_pair_has_embedding_and_scaler(store: StoreResource) -> dg.AssetCheckResult:
    return _failed_on_error(lambda: _with_store(store, evaluate_pairs_complete))


# The PCA variance check runs inside the `pca_model` asset (see assets/preprocessing.py).
ALL_CHECKS = [
    scaler_round_trip_exact,
    triplets_are_finite,
    triplet_count_matches_facts,
    every_pair_has_embedding_and_scaler,
]


# The model checks run inside the `stage1_evaluation` asset (it holds the evaluation); they
# warn rather than block: nothing downstream consumes the checkpoint inside the pipeline.
EVALUATION_CHECK_DESCRIPTIONS = {
    "finite_outputs": "Reconstructions and latents of every evaluated cell are finite.",
    "unit_norm_latents": "Every latent vector has unit L2 norm (within 1e-3).",
    "beats_pair_median_on_heldout_tickers": (
        "On held-out tickers the model's value median relative error is below the per-pair "
        "median predictor's (fitted on the training cells)."
    ),
    "not_worse_than_same_size_pca_on_both": (
        "The model is not worse than a linear PCA autoencoder of the same latent size on both "
        "value median relative error and embedding cosine at once."
    ),
}


def evaluation_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=False, description=text)
        for name, text in EVALUATION_CHECK_DESCRIPTIONS.items()
    ]


def evaluation_check_results(verdicts: list[Any]) -> list[dg.AssetCheckResult]:
    """One AssetCheckResult per `training.evaluation.Verdict`."""
    return [
        dg.AssetCheckResult(
            check_name=v.name,
            passed=bool(v.passed),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={k: _check_value(x) for k, x in v.detail.items()},
        )
        for v in verdicts
    ]


def _check_value(value: Any) -> Any:
    if value is None:
        return "n/a"
    if isinstance(value, np.floating | np.integer | np.bool_):
        return value.item()
    return value
