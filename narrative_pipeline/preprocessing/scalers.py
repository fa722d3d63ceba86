"""Per-(concept, unit) scalers, fitted for thousands of pairs at once.

Values arrive grouped: one float64 array sorted by (group, value) plus each group's start
offset and length. RobustScaler statistics (median, 25th/75th percentiles) are read straight
off the sorted array with numpy, for every group in one pass, and turned into real sklearn
`RobustScaler` objects with `center_`/`scale_` set: their `transform` is `(x - center) / scale`
in float64, exactly what `robust_transform` computes for a whole column, so a cell's stored
scaled value equals `scaler.transform([[x]])[0][0]` bit for bit.

Two rules differ from a plain sklearn fit, on purpose:
- Zero (or near-zero) interquartile range: sklearn uses scale 1, which leaves a pair whose
  median is 0 unscaled (`x - 0) / 1 == x`). We use the largest absolute deviation from the
  median instead; when every value equals the median (a constant or single-value pair) there
  is no spread at all, and the scale is `max(|median|, 1)`: the pair's own units, so a later
  value twice the constant scales to 1 and one a thousand times it to 999. Scale 1 there would
  leave a pair of dollar amounts in dollars, and a value the fit never saw (a new company
  added with frozen scalers, see `us_gaap/frozen_scalers.py`) would reach the model as 1e4 to
  1e9 and lose its embedding. The fitted cells scale to 0 whatever the scale, so this rule
  only changes the stored scale of such pairs, never a scaled value the fit saw.
- Whatever the scale, a value may still map onto itself (`(x - c) / s == x` has a solution).
  For each pair we check every one of its values and double the scale until none does.
  Doubling keeps the arithmetic exact and breaks the equality: if `(x - c) / s == x` then
  `(x - c) / (2 s) == x / 2 != x` for any non-zero finite x.

QuantileTransformer (normal output) is the original's last choice; it is fitted with sklearn
per pair. Pairs with fewer than two distinct values, or where the quantile map sends a
non-zero value onto itself, fall back to the robust rule above (reported by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.preprocessing import QuantileTransformer, RobustScaler

SCALER_KINDS = ("robust", "quantile")
_TINY_SCALE = 10 * np.finfo(np.float64).eps  # sklearn's threshold for a "constant" feature
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class GroupedValues:
    """Values of many pairs, sorted by (pair, value); pair k owns values[starts[k]:starts[k]+counts[k]]."""

    values: np.ndarray  # float64, sorted within each group
    starts: np.ndarray  # int64
    counts: np.ndarray  # int64, all >= 1

    @classmethod
    def from_unsorted(cls, group_ids: np.ndarray, values: np.ndarray) -> GroupedValues:
        """Group unsorted (group_id, value) cells; groups are numbered 0..G-1 in order of id."""
        order = np.lexsort((values, group_ids))
        sorted_ids = group_ids[order]
        _, starts, counts = np.unique(sorted_ids, return_index=True, return_counts=True)
        return cls(
            values[order].astype(np.float64), starts.astype(np.int64), counts.astype(np.int64)
        )

    def group_of_each_value(self) -> np.ndarray:
        """Index of the group owning each value (same length as `values`)."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


def _percentile_sorted(grouped: GroupedValues, q: float) -> np.ndarray:
    """np.percentile(method='linear') of every group, computed the way numpy does it."""
    n = grouped.counts.astype(np.float64)
    virtual = n * q + (1.0 - q) - 1.0  # numpy's _compute_virtual_index with alpha = beta = 1
    lower = np.floor(virtual)
    gamma = virtual - lower
    lo_idx = grouped.starts + lower.astype(np.int64)
    hi_idx = grouped.starts + np.minimum(lower.astype(np.int64) + 1, grouped.counts - 1)
    a = grouped.values[lo_idx]
    b = grouped.values[hi_idx]
    diff = b - a
    result = a + diff * gamma
    high = gamma >= 0.5
    result[high] = (b - diff * (1.0 - gamma))[high]
    return np.where(a == b, a, result)


def _median_sorted(grouped: GroupedValues) -> np.ndarray:
    """np.median of every group (mean of the two middle values when the count is even)."""
    mid = grouped.starts + grouped.counts // 2
    upper = grouped.values[mid]
    lower = grouped.values[np.where(grouped.counts % 2 == 0, mid - 1, mid)]
    return np.where(grouped.counts % 2 == 0, (lower + upper) / 2.0, upper)


@dataclass(frozen=True)
class RobustParams:
    """Per-group robust scaling parameters and how they were reached."""

    center: np.ndarray
    scale: np.ndarray
    # bool: scale from the largest deviation (or max(|center|, 1)), not the IQR
    zero_iqr: np.ndarray
    doubled: np.ndarray  # bool: scale doubled so that no non-zero value maps onto itself


def robust_params(grouped: GroupedValues) -> RobustParams:
    """Median and interquartile range of every group, with the module's two extra rules."""
    center = _median_sorted(grouped)
    scale = _percentile_sorted(grouped, 0.75) - _percentile_sorted(grouped, 0.25)
    zero_iqr = scale < _TINY_SCALE
    if zero_iqr.any():
        deviation = np.abs(grouped.values - np.repeat(center, grouped.counts))
        max_dev = np.maximum.reduceat(deviation, grouped.starts)
        own_units = np.maximum(np.abs(center), 1.0)  # constant pair: see the module docstring
        scale = np.where(zero_iqr, np.where(max_dev >= _TINY_SCALE, max_dev, own_units), scale)
    final = make_scaled_differ(grouped, center, scale)
    return RobustParams(center, final, zero_iqr, final != scale)


def robust_transform(values: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """RobustScaler.transform for a column whose cells carry their own pair's center and scale."""
    out = np.asarray(values, dtype=np.float64).copy()
    out -= center
    out /= scale
    return out


def make_scaled_differ(grouped: GroupedValues, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Double the scale of any group in which some non-zero value would scale onto itself."""
    scale = scale.copy()
    group_of = grouped.group_of_each_value()
    for _ in range(_MAX_DOUBLINGS):
        scaled = robust_transform(grouped.values, center[group_of], scale[group_of])
        clash = (scaled == grouped.values) & (grouped.values != 0)
        if not clash.any():
            return scale
        scale[np.unique(group_of[clash])] *= 2.0
    raise ArithmeticError("could not find a scale that changes every non-zero value")


def make_robust_scaler(center: float, scale: float) -> RobustScaler:
    """A fitted sklearn RobustScaler for one feature with the given parameters."""
    scaler = RobustScaler()
    scaler.center_ = np.array([center], dtype=np.float64)
    scaler.scale_ = np.array([scale], dtype=np.float64)
    scaler.n_features_in_ = 1
    return scaler


def fit_quantile_scaler(values: np.ndarray) -> QuantileTransformer | None:
    """QuantileTransformer(normal) on one pair's values, or None where it cannot serve.

    None means: fewer than two distinct values, or the fitted map sends some non-zero value
    onto itself; the caller then uses the robust rule for that pair.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(np.unique(values)) < 2:
        return None
    scaler = QuantileTransformer(
        output_distribution="normal",
        n_quantiles=min(len(values), 1000),
        subsample=max(len(values), 10),  # use every value, as the original did
        random_state=42,
    )
    scaled = scaler.fit_transform(values.reshape(-1, 1))[:, 0]
    if np.any((scaled == values) & (values != 0)) or not np.all(np.isfinite(scaled)):
        return None
    return scaler


class FittedScaler(Protocol):
    """What the store needs of a fitted sklearn scaler (RobustScaler, QuantileTransformer)."""

    def transform(self, X: np.ndarray) -> np.ndarray: ...


def transform_column(scaler: FittedScaler, values: np.ndarray) -> np.ndarray:
    """`scaler.transform` on a column of one pair's values; element-wise equal to one-cell calls."""
    return scaler.transform(np.asarray(values, dtype=np.float64).reshape(-1, 1))[:, 0]
