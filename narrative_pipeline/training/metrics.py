"""Per-pair reconstruction quality on inverse-scaled values, computed once per validation epoch.

Predictions are inverse-transformed with each pair's own fitted scaler (one call per pair, not
per cell); medians and R2 are then computed for all pairs at once with grouped array operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def inverse_scale_by_pair(
    scaled: np.ndarray, pair_id: np.ndarray, scalers: Sequence[Any]
) -> np.ndarray:
    """Inverse-transform `scaled` values, grouping cells by pair so each scaler runs once."""
    scaled = np.asarray(scaled, dtype=np.float64)
    out = np.empty_like(scaled)
    order = np.argsort(pair_id, kind="stable")
    pairs, starts = np.unique(pair_id[order], return_index=True)
    for pair, segment in zip(pairs, np.split(order, starts[1:]), strict=True):
        values = scaled[segment].reshape(-1, 1)
        out[segment] = np.asarray(scalers[int(pair)].inverse_transform(values)).ravel()
    return out


def per_pair_value_metrics(
    predicted: np.ndarray, actual: np.ndarray, pair_id: np.ndarray
) -> pd.DataFrame:
    """Median relative error and R2 of `predicted` against `actual` per pair.

    Relative error is undefined where the actual value is 0 (those cells are left out; a pair
    of zeros only gets NaN). R2 is NaN for pairs with fewer than two cells or a constant actual
    value (undefined there).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "pair_id": np.asarray(pair_id, dtype=np.int64),
            "rel_error": np.abs(predicted - actual) / np.where(actual != 0, np.abs(actual), np.nan),
            "sq_error": (predicted - actual) ** 2,
            "actual": actual,
        }
    )
    grouped = frame.groupby("pair_id", sort=True)
    result = pd.DataFrame(
        {
            "n_cells": grouped.size(),
            "median_rel_error": grouped["rel_error"].median(),
            "ss_res": grouped["sq_error"].sum(),
        }
    )
    ss_tot = grouped["actual"].var(ddof=0) * result["n_cells"]
    defined = (result["n_cells"] >= 2) & (ss_tot > 0)
    result["r2"] = np.where(defined, 1.0 - result["ss_res"] / ss_tot.where(defined, 1.0), np.nan)
    return result.drop(columns="ss_res")


def summarise_pair_metrics(
    table: pd.DataFrame, pair_names: Sequence[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Scalars to log (medians over pairs and the worst pair) plus the worst pair's name."""
    if table.empty:
        return {}
    summary: dict[str, Any] = {}
    rel = table["median_rel_error"].dropna()
    if not rel.empty:
        summary["median_rel_error"] = float(rel.median())
        summary["worst_pair_median_rel_error"] = float(rel.max())
        summary["worst_rel_error_pair_id"] = int(rel.idxmax())
    r2 = table["r2"].dropna()
    if not r2.empty:
        summary["r2_median"] = float(r2.median())
        summary["r2_worst"] = float(r2.min())
        summary["worst_r2_pair_id"] = int(r2.idxmin())
    if pair_names is not None:
        for key in ("worst_rel_error_pair_id", "worst_r2_pair_id"):
            if key in summary and summary[key] < len(pair_names):
                concept, unit = pair_names[summary[key]]
                summary[key.replace("_id", "")] = f"{concept} [{unit}]"
    return summary


def cell_value_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Per-cell relative error in original units: its median and the share within 1% / 10%.

    Cells whose actual value is 0 are left out of the relative error (it is undefined there).
    The median over cells is what a typical cell sees, unlike the MSE, which a handful of
    extreme cells dominate.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    nonzero = actual != 0
    if not nonzero.any():
        return {}
    rel = np.abs(predicted[nonzero] - actual[nonzero]) / np.abs(actual[nonzero])
    rel = np.where(np.isfinite(rel), rel, np.inf)
    return {
        "value_median_rel_error": float(np.median(rel)),
        "value_within_1pct": float(np.mean(rel <= 0.01)),
        "value_within_10pct": float(np.mean(rel <= 0.10)),
    }
