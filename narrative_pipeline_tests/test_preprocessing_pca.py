"""PCA: component choice, determinism to the byte, and the PNG plots."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from narrative_pipeline.preprocessing import pca, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _matrix(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((5, 40))
    return (
        rng.standard_normal((120, 5)) * [10, 5, 2, 1, 0.5]
    ) @ basis + 0.01 * rng.standard_normal((120, 40))


def test_choose_components() -> None:
    ratios = np.array([0.5, 0.3, 0.15, 0.05])
    assert pca.choose_components(ratios, 0.95) == 3
    assert pca.choose_components(ratios, 0.5) == 1
    assert pca.choose_components(ratios, 1.0) == 4
    with pytest.raises(ValueError):
        pca.choose_components(ratios, 0.0)


def test_variance_target_and_fixed_count() -> None:
    fit = pca.fit_pca(_matrix(), variance=0.95)
    assert fit.model.explained_variance_ratio_.sum() >= 0.95
    assert fit.explained_variance_ratio_full[: fit.n_components - 1].sum() < 0.95
    fixed = pca.fit_pca(_matrix(), n_components=7)
    assert fixed.model.components_.shape == (7, 40)
    with pytest.raises(ValueError):
        pca.fit_pca(_matrix(), n_components=500)
    with pytest.raises(ValueError, match="at least 2 rows"):
        pca.fit_pca(_matrix()[:1])


def test_pca_is_deterministic_to_the_byte() -> None:
    first = pca.fit_pca(_matrix())
    second = pca.fit_pca(_matrix().copy())
    assert pickle.dumps(first.model) == pickle.dumps(second.model)
    assert (
        pca.reduce(first.model, _matrix()).tobytes()
        == pca.reduce(second.model, _matrix()).tobytes()
    )
    # The sign convention: each component's largest loading is positive.
    comps = first.model.components_
    assert (comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)] > 0).all()


def test_plots_are_png_and_saved(tmp_path) -> None:
    fit = pca.fit_pca(_matrix())
    curve = plots.explained_variance_png(fit.explained_variance_ratio_full, fit.n_components, 0.95)
    scatter = plots.scatter_png(
        pca.reduce(fit.model, _matrix())[:, :2], ["USD"] * 100 + ["SHARES"] * 20
    )
    assert curve.startswith(PNG_SIGNATURE) and scatter.startswith(PNG_SIGNATURE)
    assert curve == plots.explained_variance_png(
        fit.explained_variance_ratio_full, fit.n_components, 0.95
    )
    paths = plots.save_pngs({"curve": curve, "scatter": scatter}, tmp_path / "plots")
    assert [p.read_bytes() for p in paths] == [curve, scatter]


@pytest.mark.parametrize(("rows", "cols"), [(120, 40), (30, 64), (64, 64), (9, 3)])
def test_kept_components_pickle_as_a_refit_does(rows: int, cols: int) -> None:
    """`keep_components` (the full fit cut to k) pickles to the same bytes as fitting
    `PCA(n_components=k)` again: the stored model does not change (sklearn's attributes)."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    x = np.random.default_rng(rows).standard_normal((rows, cols)) @ np.diag(
        np.linspace(3, 0.1, cols)
    )
    with threadpool_limits(limits=1):
        full = PCA(svd_solver="full").fit(x)
        for k in sorted({1, 2, min(rows, cols) // 2 or 1, min(rows, cols)}):
            refit = PCA(n_components=k, svd_solver="full").fit(x)
            kept = pca.keep_components(full, k)
            assert pickle.dumps(kept, protocol=5) == pickle.dumps(refit, protocol=5), k
    assert full.n_components_ == min(rows, cols)  # the full fit was not changed
