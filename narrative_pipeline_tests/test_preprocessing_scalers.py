"""Per-pair scalers: vectorised robust fit vs sklearn, the exact round trip, awkward pairs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import RobustScaler

from narrative_pipeline.preprocessing import scalers


def _grouped(groups: list[list[float]]) -> scalers.GroupedValues:
    ids = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    values = np.concatenate([np.asarray(g, dtype=np.float64) for g in groups])
    return scalers.GroupedValues.from_unsorted(ids, values)


def test_vectorised_robust_fit_matches_sklearn_on_ordinary_groups() -> None:
    rng = np.random.default_rng(7)
    groups = [
        list(rng.lognormal(10, 3, size=n) * rng.choice([-1, 1], size=n)) for n in range(2, 60)
    ]
    params = scalers.robust_params(_grouped(groups))
    for k, values in enumerate(groups):
        reference = RobustScaler().fit(np.asarray(values).reshape(-1, 1))
        assert params.center[k] == reference.center_[0]
        if not params.doubled[k]:
            assert params.scale[k] == reference.scale_[0]


def test_round_trip_is_exact_for_every_value() -> None:
    rng = np.random.default_rng(3)
    groups = [
        list(np.round(rng.normal(0, 10 ** rng.integers(0, 12), size=n), 2))
        for n in (1, 2, 3, 10, 101)
    ]
    grouped = _grouped(groups)
    params = scalers.robust_params(grouped)
    group_of = grouped.group_of_each_value()
    column = scalers.robust_transform(
        grouped.values, params.center[group_of], params.scale[group_of]
    )
    for k in range(len(groups)):
        scaler = scalers.make_robust_scaler(params.center[k], params.scale[k])
        for pos in np.flatnonzero(group_of == k):
            x = float(grouped.values[pos])
            assert scaler.transform([[x]])[0][0] == column[pos]


@pytest.mark.parametrize(
    "values",
    [
        [42.0],  # single value: center 42, scaled 0
        [0.0, 0.0, 0.0, 0.0, 5.0],  # zero IQR around median 0: sklearn's scale 1 would leave 5 as 5
        [-0.5, -0.5, 0.0, 0.5, 0.5],  # IQR exactly 1, median 0: every value would map onto itself
        [7.0, 7.0, 7.0],  # constant
        [1e20, 1e20, 1e20 + 2**20, 1e20],  # huge values with a tiny spread
    ],
)
def test_awkward_pairs_never_leave_a_nonzero_value_unchanged(values: list[float]) -> None:
    grouped = _grouped([values])
    params = scalers.robust_params(grouped)
    assert np.isfinite(params.center).all() and np.isfinite(params.scale).all()
    assert (params.scale > 0).all()
    scaler = scalers.make_robust_scaler(params.center[0], params.scale[0])
    for x in values:
        scaled = scaler.transform([[x]])[0][0]
        assert np.isfinite(scaled)
        if x != 0:
            assert scaled != x


@pytest.mark.parametrize(
    ("values", "expected_scale"),
    [
        ([2.5e9, 2.5e9, 2.5e9], 2.5e9),  # constant dollar amounts: scale in dollars of the pair
        ([-4.0e6], 4.0e6),  # single negative value: |center|
        ([0.25, 0.25], 1.0),  # constant below 1: floor of 1
        ([0.0, 0.0, 0.0], 1.0),  # constant 0: floor of 1
    ],
)
def test_constant_pair_scale_is_in_its_own_units(
    values: list[float], expected_scale: float
) -> None:
    params = scalers.robust_params(_grouped([values]))
    assert params.zero_iqr[0] and not params.doubled[0]
    assert params.center[0] == values[0] and params.scale[0] == expected_scale
    scaler = scalers.make_robust_scaler(params.center[0], params.scale[0])
    assert scaler.transform([[values[0]]])[0][0] == 0.0  # the fitted cells are unchanged
    center = values[0]
    if abs(center) >= 1:  # a value the fit never saw, far from the constant, stays moderate
        sign = np.sign(center)
        assert scaler.transform([[2 * center]])[0][0] == pytest.approx(sign * 1.0)
        assert scaler.transform([[1000 * center]])[0][0] == pytest.approx(sign * 999.0)
        assert scaler.transform([[-3 * center]])[0][0] == pytest.approx(sign * -4.0)
    else:  # below 1 the floor keeps the scale at 1: a new value moves by its own difference
        assert scaler.transform([[center + 0.5]])[0][0] == pytest.approx(0.5)


def test_constant_pair_keeps_new_values_moderate_where_scale_one_did_not() -> None:
    """The case that broke held-out embeddings: a pair constant at ~1e9 in the fitted
    tickers, and a new company whose value in it is of the same order."""
    params = scalers.robust_params(_grouped([[1.2e9, 1.2e9], [3.0, 5.0, 8.0, 13.0]]))
    column = scalers.robust_transform(np.array([3.4e9, 0.0]), params.center[0], params.scale[0])
    assert np.all(np.abs(column) < 10)  # scale 1 gave 2.2e9 and -1.2e9
    assert params.scale[1] == RobustScaler().fit([[3.0], [5.0], [8.0], [13.0]]).scale_[0]


def test_doubling_is_reported_for_the_identity_case() -> None:
    params = scalers.robust_params(_grouped([[-0.5, -0.5, 0.0, 0.5, 0.5]]))
    assert params.doubled[0] and params.scale[0] == 2.0


def test_quantile_scaler_round_trip_and_fallbacks() -> None:
    rng = np.random.default_rng(11)
    values = rng.lognormal(5, 2, size=2500)
    fitted = scalers.fit_quantile_scaler(values)
    assert fitted is not None and fitted.n_quantiles == 1000
    column = scalers.transform_column(fitted, values)
    for pos in range(0, len(values), 97):
        assert fitted.transform([[float(values[pos])]])[0][0] == column[pos]
    assert scalers.fit_quantile_scaler(np.array([3.0, 3.0, 3.0])) is None  # one distinct value
    assert scalers.fit_quantile_scaler(np.array([9.0])) is None
