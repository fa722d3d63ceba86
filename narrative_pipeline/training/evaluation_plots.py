"""Pictures of an evaluation: value error by pair (model vs baselines) and a 2-D latent map.

The latent map projects the model's latents of the headline split onto their first two
principal components and colours each cell by its concept's group: the concept name's first
CamelCase word ("Revenue...", "Liabilities..."), the most frequent groups named, the rest grey.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

WORST_PAIRS_PLOTTED = 20
LATENT_POINTS = 5000
NAMED_GROUPS = 8


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def error_by_pair_png(evaluation: dict[str, Any], pair_names: Sequence[tuple[str, str]]) -> bytes:
    """Per-pair median relative error of the pairs the model does worst on, with baselines."""
    plt = _pyplot()
    model_errors = evaluation["model"].get("pair_errors", {})
    worst = sorted(model_errors, key=model_errors.get, reverse=True)[:WORST_PAIRS_PLOTTED]
    fig, ax = plt.subplots(figsize=(8, 0.3 * max(4, len(worst)) + 1), dpi=100)
    try:
        y = np.arange(len(worst))
        series = (
            ("model", evaluation["model"]),
            ("PCA (same size)", evaluation["baselines"]["pca"]),
            ("per-pair median", evaluation["baselines"]["pair_median"]),
        )
        for k, (label, figures) in enumerate(series):
            errors = figures.get("pair_errors", {})
            values = [max(errors.get(p, np.nan), 1e-12) for p in worst]
            ax.barh(y + (k - 1) * 0.27, values, height=0.27, label=label)
        ax.set_yticks(
            y, [f"{pair_names[p][0][:40]} [{pair_names[p][1]}]" for p in worst], fontsize=7
        )
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel(f"median relative error ({evaluation['headline_split']} split)")
        ax.set_title("Value error by pair: the model's worst pairs")
        ax.legend(fontsize=7)
        return _png(fig)
    finally:
        plt.close(fig)


def concept_group(concept: str) -> str:
    """First CamelCase word of a concept name ("AccountsPayableCurrent" -> "Accounts")."""
    match = re.match(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", concept)
    return match.group(0) if match else concept[:12]


def latent_map_png(extras: dict[str, Any]) -> bytes:
    """First two principal components of (a sample of) the model's latents, by concept group."""
    plt = _pyplot()
    latents, cells = extras.get("latents"), extras.get("cells")
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    try:
        if latents is None or cells is None or len(latents) < 3:
            ax.set_title("no latents to map")
            return _png(fig)
        rng = np.random.default_rng(0)
        take = rng.permutation(len(latents))[:LATENT_POINTS]
        z = np.asarray(latents, dtype=np.float64)[take]
        z = z - z.mean(axis=0)
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        xy = z @ vt[:2].T
        names = extras["pair_names"]
        groups = [concept_group(names[int(p)][0]) for p in cells.pair_id[take]]
        common = [g for g, _ in Counter(groups).most_common(NAMED_GROUPS)]
        for group in ["other", *common]:
            mask = np.array([(g if g in common else "other") == group for g in groups])
            if mask.any():
                ax.scatter(*xy[mask].T, s=4, alpha=0.6, label=group,
                           color="lightgrey" if group == "other" else None)  # fmt: skip
        ax.set_title(f"Latents of the {extras.get('split')} split (PCA to 2-D)")
        ax.legend(fontsize=7, markerscale=3)
        return _png(fig)
    finally:
        plt.close(fig)
