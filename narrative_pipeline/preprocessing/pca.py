"""Exact PCA of the pair embeddings, float64, with a deterministic sign convention.

sklearn's `svd_solver="full"` is LAPACK's exact SVD; sklearn then flips each component so its
largest-magnitude loading is positive (`svd_flip(u_based_decision=False)`), which removes the
sign ambiguity of the SVD. Same input bytes give the same model bytes.

The SVD runs on one BLAS thread: results then do not depend on the thread count, and on a
shared 2-core machine a multi-threaded OpenBLAS spinning against other processes was measured
40x slower (2 s instead of 45 ms for 501 x 384).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

DEFAULT_VARIANCE = 0.95


@dataclass(frozen=True)
class PcaFit:
    """The fitted model plus the full explained-variance curve it was chosen from."""

    model: PCA
    explained_variance_ratio_full: np.ndarray  # one entry per possible component
    n_components: int


def choose_components(ratios: np.ndarray, variance: float) -> int:
    """Smallest number of leading components whose ratios add up to at least `variance`."""
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= variance - 1e-12)[0]
    return int(reached[0] + 1) if len(reached) else len(ratios)


def fit_pca(
    matrix: np.ndarray, variance: float | None = DEFAULT_VARIANCE, n_components: int | None = None
) -> PcaFit:
    """Fit PCA keeping `n_components`, or as many as reach `variance` of the total."""
    x = np.ascontiguousarray(matrix, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA needs a 2-D matrix with at least 2 rows, got shape {x.shape}")
    with threadpool_limits(limits=1):
        return _fit_single_threaded(x, variance, n_components)


def _fit_single_threaded(x: np.ndarray, variance: float | None, n_components: int | None) -> PcaFit:
    full = PCA(svd_solver="full").fit(x)
    ratios = np.nan_to_num(full.explained_variance_ratio_, nan=0.0)
    limit = len(ratios)
    if n_components is not None:
        if not 1 <= n_components <= limit:
            raise ValueError(
                f"n_components must be in [1, {limit}] for {x.shape}, got {n_components}"
            )
        k = n_components
    else:
        k = choose_components(ratios, DEFAULT_VARIANCE if variance is None else variance)
    return PcaFit(
        model=keep_components(full, k), explained_variance_ratio_full=ratios, n_components=k
    )


def keep_components(full: PCA, k: int) -> PCA:
    """The model `PCA(n_components=k, svd_solver="full").fit(x)` would give, from the fit of
    every component of the same x: the same SVD cut to its first k components, as sklearn's
    `_fit_full` cuts it (same attributes, order and values: the pickled bytes are equal,
    which test_preprocessing_pca checks), without computing the SVD a second time."""
    model = copy.copy(full)
    model.n_components = k
    variance = full.explained_variance_
    model.noise_variance_ = np.mean(variance[k:]) if k < len(variance) else 0.0
    model.n_components_ = k
    model.components_ = np.array(full.components_[:k, :], copy=True)
    model.explained_variance_ = np.array(variance[:k], copy=True)
    model.explained_variance_ratio_ = np.array(full.explained_variance_ratio_[:k], copy=True)
    model.singular_values_ = np.array(full.singular_values_[:k], copy=True)
    return model


def reduce(model: PCA, matrix: np.ndarray) -> np.ndarray:
    """Project embeddings onto the kept components (float64)."""
    with threadpool_limits(limits=1):
        return model.transform(np.ascontiguousarray(matrix, dtype=np.float64))
