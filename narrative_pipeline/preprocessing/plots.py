"""PNG plots of the PCA: explained-variance curve and a 2-D scatter of pair embeddings.

Rendered with matplotlib's Agg backend (no display) and returned as bytes so that reports,
Dagster metadata and files can all carry them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure_to_png(fig) -> bytes:
    buffer = io.BytesIO()
    # No timestamp or software tags, so identical inputs give identical bytes.
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def explained_variance_png(ratios: np.ndarray, chosen: int, target: float | None = None) -> bytes:
    """Cumulative explained variance per component count, with the chosen count marked."""
    plt = _pyplot()
    cumulative = np.cumsum(ratios)
    counts = np.arange(1, len(ratios) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(counts, cumulative, color="tab:blue", label="cumulative explained variance")
    ax.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen: {chosen} components")
    if target is not None:
        ax.axhline(target, color="tab:gray", linestyle=":", label=f"target {target:.0%}")
    ax.set_xlabel("number of components")
    ax.set_ylabel("explained variance")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("PCA of concept/unit embeddings")
    return _figure_to_png(fig)


def scatter_png(coords: np.ndarray, units: Sequence[str], max_legend: int = 8) -> bytes:
    """Pairs on their first two principal components, coloured by unit (most common units)."""
    plt = _pyplot()
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape[1] < 2:
        coords = np.column_stack([coords[:, 0], np.zeros(len(coords))])
    units_arr = np.asarray(units, dtype=object)
    names, counts = np.unique(units_arr.astype(str), return_counts=True)
    top = [names[i] for i in np.argsort(-counts, kind="stable")[:max_legend]]
    fig, ax = plt.subplots(figsize=(7, 6))
    other = ~np.isin(units_arr.astype(str), top)
    if other.any():
        ax.scatter(coords[other, 0], coords[other, 1], s=6, color="lightgray", label="other units")
    for unit in top:
        mask = units_arr.astype(str) == unit
        ax.scatter(coords[mask, 0], coords[mask, 1], s=8, label=unit)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(loc="best", fontsize="small", markerscale=2)
    ax.set_title(f"{len(coords)} concept/unit pairs")
    return _figure_to_png(fig)


def save_pngs(pngs: dict[str, bytes], directory: str | Path) -> list[Path]:
    """Write each named PNG to `directory/<name>.png`; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in pngs.items():
        path = directory / f"{name}.png"
        path.write_bytes(data)
        paths.append(path)
    return paths
