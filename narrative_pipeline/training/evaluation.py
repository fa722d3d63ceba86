"""Honest evaluation of a Stage 1 checkpoint: unseen tickers, original units, same-run baselines.

It answers "is the model any good?" rather than "did the loss fall?":
- on two splits: whole held-out tickers (companies training never saw) and the cell-key
  validation split (unseen cells of seen companies);
- value quality in original units (per-cell median relative error, share within 1% / 10%,
  per-pair median relative error and R2 with the worst pairs named), embedding cosine, and a
  check that the latents are unit vectors;
- against baselines fitted here on the same training cells and scored on the same cells: the
  per-pair median predictor (a lookup table: it returns the pair's own embedding, so its cosine
  is 1 by construction) and a linear PCA autoencoder with the SAME latent size.

`evaluate` takes any `Predictor`, so tests can score crafted models; `evaluate_checkpoint` wraps
a saved checkpoint. `judge` turns an evaluation into the asset checks' verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from narrative_pipeline.training.metrics import (
    cell_value_metrics,
    inverse_scale_by_pair,
    per_pair_value_metrics,
)
from narrative_pipeline.training.splits import Split, heldout_ticker_ids, split_mask

if TYPE_CHECKING:
    from narrative_pipeline.us_gaap.store import UsGaapStore

MAX_EVAL_CELLS = 200_000  # cells per split (sampled with a fixed seed beyond that)
READ_CHUNK = 1 << 20
WORST_PAIRS = 5
UNIT_NORM_TOLERANCE = 1e-3
# Numerical precision of the PCA comparison. The model reconstructs in float32 (machine epsilon
# 1.19e-7), the PCA baseline in float64; where both reconstruct (almost) exactly, their figures
# differ by the model's rounding alone (measured on the generated sample with no bottleneck:
# value error 1.35e-7 vs PCA's 1.9e-8, about one float32 epsilon apart). Differences within two
# float32 epsilons are ties, so rounding cannot flip the check; anything larger counts.
FLOAT32_EPS = float(np.finfo(np.float32).eps)
PCA_TIE_PRECISION = 2 * FLOAT32_EPS
EVAL_SPLITS = ("heldout", "val")


@dataclass
class SplitCells:
    """The cells of one split as model inputs and truth."""

    name: str
    x: np.ndarray  # float32 [n, d + 1]: pair embedding, scaled value
    pair_id: np.ndarray  # int64
    unscaled: np.ndarray  # float64, original units

    def __len__(self) -> int:
        return len(self.pair_id)


@dataclass
class Prediction:
    """A predictor's output for a split: value in original units, reconstructed embedding and,
    for models with one, the latent vectors."""

    value: np.ndarray
    embedding: np.ndarray
    latents: np.ndarray | None = None


class Predictor(Protocol):
    def predict(self, cells: SplitCells) -> Prediction: ...


class ScaledSpaceReconstructor:
    """Shared tail of the model and PCA baselines: reconstructed rows -> Prediction."""

    def __init__(self, scalers: Sequence[Any]) -> None:
        self.scalers = scalers

    def _prediction(
        self, cells: SplitCells, recon: np.ndarray, latents: np.ndarray | None
    ) -> Prediction:
        value = inverse_scale_by_pair(recon[:, -1], cells.pair_id, self.scalers)
        return Prediction(value=value, embedding=recon[:, :-1], latents=latents)


class CheckpointPredictor(ScaledSpaceReconstructor):
    """A trained Stage1Autoencoder: reconstruction through its latent."""

    def __init__(self, model: Any, scalers: Sequence[Any], batch_size: int = 65536) -> None:
        super().__init__(scalers)
        self.model = model
        self.batch_size = batch_size

    @torch.no_grad()
    def predict(self, cells: SplitCells) -> Prediction:
        recon, latents = [], []
        for i in range(0, len(cells), self.batch_size):
            x = torch.from_numpy(cells.x[i : i + self.batch_size]).to(self.model.device)
            r, z = self.model(x)
            recon.append(r.double().cpu().numpy())
            latents.append(z.float().cpu().numpy())
        width = cells.x.shape[1]
        recon_all = np.concatenate(recon) if recon else np.zeros((0, width))
        z_all = np.concatenate(latents) if latents else np.zeros((0, 1), dtype=np.float32)
        return self._prediction(cells, recon_all, z_all)


class PcaAutoencoder(ScaledSpaceReconstructor):
    """Linear autoencoder baseline: PCA with `k` components fitted on the training inputs."""

    def __init__(self, train_x: np.ndarray, k: int, scalers: Sequence[Any]) -> None:
        from sklearn.decomposition import PCA

        super().__init__(scalers)
        self.k = int(min(k, train_x.shape[1], len(train_x)))
        self.pca = PCA(n_components=self.k, svd_solver="full").fit(train_x.astype(np.float64))

    def predict(self, cells: SplitCells) -> Prediction:
        if not len(cells):
            return self._prediction(cells, np.zeros((0, cells.x.shape[1])), None)
        codes = self.pca.transform(cells.x.astype(np.float64))
        return self._prediction(cells, self.pca.inverse_transform(codes), None)


class PairMedianPredictor:
    """Predicts each cell's value as the median of its pair's training values (original units).

    Pairs with no training cell get their scaler's image of 0 (the robust centre). The embedding
    is the pair's own (a lookup), so this baseline's cosine is 1 by construction.
    """

    def __init__(
        self, train_pair_id: np.ndarray, train_unscaled: np.ndarray, scalers: Sequence[Any]
    ) -> None:
        self.medians = np.array(
            [float(np.asarray(s.inverse_transform([[0.0]])).ravel()[0]) for s in scalers]
        )
        order = np.argsort(train_pair_id, kind="stable")
        pairs, starts = np.unique(train_pair_id[order], return_index=True)
        for pair, segment in zip(pairs, np.split(order, starts[1:]), strict=True):
            self.medians[int(pair)] = float(np.median(train_unscaled[segment]))

    def predict(self, cells: SplitCells) -> Prediction:
        return Prediction(value=self.medians[cells.pair_id], embedding=cells.x[:, :-1].copy())


def split_indices(
    store: UsGaapStore, heldout: Sequence[str], val_fraction: float
) -> dict[str, np.ndarray]:
    """Cell indices of the train, val and heldout splits (the training loop's own rules)."""
    tickers = list(store.get_tickers()) if heldout else []
    ids = heldout_ticker_ids(tickers, heldout) if heldout else None
    splits: tuple[Split, ...] = ("train", "val", "heldout")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in splits}
    n_cells = int(store.get_triplet_count())
    for start in range(0, n_cells, READ_CHUNK):
        cells = store.read_cell_range(start, min(n_cells, start + READ_CHUNK))
        ticker_id = getattr(cells, "ticker_id", None)
        for name in splits:
            mask = split_mask(np.asarray(cells.cell_key), name, val_fraction, ticker_id, ids)
            parts[name].append(np.asarray(cells.i_cell, dtype=np.int64)[mask])
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}


def read_split(
    store: UsGaapStore,
    name: str,
    indices: np.ndarray,
    matrix: np.ndarray,
    max_cells: int,
    seed: int,
) -> SplitCells:
    """At most `max_cells` cells of a split (a seeded sample when larger), as inputs and truth."""
    if len(indices) > max_cells:
        rng = np.random.default_rng([seed, len(name)])
        indices = np.sort(rng.choice(indices, size=max_cells, replace=False))
    cells = store.read_cells(indices)
    pair_id = np.asarray(cells.pair_id, dtype=np.int64)
    x = np.empty((len(pair_id), matrix.shape[1] + 1), dtype=np.float32)
    x[:, :-1] = matrix[pair_id]
    x[:, -1] = np.asarray(cells.scaled, dtype=np.float32)
    return SplitCells(name, x, pair_id, np.asarray(cells.unscaled, dtype=np.float64))


def score(
    cells: SplitCells, prediction: Prediction, pair_names: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Every figure of one predictor on one split (see the module docstring)."""
    result: dict[str, Any] = {"cells": len(cells)}
    if not len(cells):
        return result
    result.update(cell_value_metrics(prediction.value, cells.unscaled))
    table = per_pair_value_metrics(prediction.value, cells.unscaled, cells.pair_id)
    rel = table["median_rel_error"].dropna()
    r2 = table["r2"].dropna()
    result["pair_median_rel_error"] = float(rel.median()) if len(rel) else None
    result["pair_r2_median"] = float(r2.median()) if len(r2) else None
    worst = table.dropna(subset=["median_rel_error"]).nlargest(WORST_PAIRS, "median_rel_error")
    result["worst_pairs"] = [
        {
            "pair": "{} [{}]".format(*pair_names[int(p)]),
            "median_rel_error": float(row.median_rel_error),
            "r2": None if np.isnan(row.r2) else float(row.r2),
            "cells": int(row.n_cells),
        }
        for p, row in worst.iterrows()
    ]
    result["pair_errors"] = {int(p): float(v) for p, v in rel.items()}
    embedding = np.asarray(prediction.embedding, dtype=np.float64)
    target = cells.x[:, :-1].astype(np.float64)
    norms = np.linalg.norm(embedding, axis=1) * np.linalg.norm(target, axis=1)
    cosine = (embedding * target).sum(axis=1) / np.where(norms > 0, norms, 1.0)
    result["embedding_cosine"] = float(np.mean(cosine))
    result["finite"] = bool(np.isfinite(prediction.value).all() and np.isfinite(embedding).all())
    if prediction.latents is not None:
        latents = np.asarray(prediction.latents, dtype=np.float64)
        result["finite"] = result["finite"] and bool(np.isfinite(latents).all())
        deviation = np.abs(np.linalg.norm(latents, axis=1) - 1.0)
        result["latent_norm_max_deviation"] = float(deviation.max()) if len(deviation) else 0.0
    return result


def evaluate(
    model: Predictor,
    store: UsGaapStore,
    *,
    heldout_tickers: Sequence[str],
    val_fraction: float,
    latent_dim: int,
    max_cells: int = MAX_EVAL_CELLS,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(evaluation dict, extras for plots: the headline split's cells and latents)."""
    matrix, pair_names = store.get_embedding_matrix()
    matrix = np.asarray(matrix, dtype=np.float32)
    scalers = store.load_scalers()
    indices = split_indices(store, heldout_tickers, val_fraction)
    train = read_split(store, "train", indices["train"], matrix, max_cells, seed)
    if not len(train):
        raise ValueError("no training cells to fit the baselines on")
    pca = PcaAutoencoder(train.x, latent_dim, scalers)
    predictors: dict[str, Predictor] = {
        "model": model,
        "pca": pca,
        "pair_median": PairMedianPredictor(train.pair_id, train.unscaled, scalers),
    }
    by_split: dict[str, dict[str, Any]] = {name: {} for name in predictors}
    extras: dict[str, Any] = {}
    for split in EVAL_SPLITS:
        cells = read_split(store, split, indices[split], matrix, max_cells, seed)
        for name, predictor in predictors.items():
            if not len(cells):
                by_split[name][split] = {"cells": 0}
                continue
            prediction = predictor.predict(cells)
            by_split[name][split] = score(cells, prediction, pair_names)
            if name == "model" and "latents" not in extras and len(cells):
                extras.update(split=split, cells=cells, latents=prediction.latents)
    headline = "heldout" if len(indices["heldout"]) else "val"
    evaluation = {
        "headline_split": headline,
        "model": _summary(by_split["model"], headline),
        "baselines": {
            "pca": {**_summary(by_split["pca"], headline), "latent_dim": pca.k},
            "pair_median": _summary(by_split["pair_median"], headline),
        },
        "split": {
            "heldout_tickers": list(heldout_tickers),
            "val_fraction": val_fraction,
            "cells": {k: int(len(v)) for k, v in indices.items()},
            "evaluated_cells_max": max_cells,
        },
    }
    extras["pair_names"] = pair_names
    return evaluation, extras


def _summary(by_split: dict[str, dict[str, Any]], headline: str) -> dict[str, Any]:
    """The headline split's figures at the top level, every split's under `by_split`."""
    top = {k: v for k, v in by_split.get(headline, {}).items() if k != "pair_errors"}
    trimmed = {
        split: {k: v for k, v in figures.items() if k != "pair_errors"}
        for split, figures in by_split.items()
    }
    return {**top, "pair_errors": by_split.get(headline, {}).get("pair_errors", {}),
            "by_split": trimmed}  # fmt: skip


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    store: UsGaapStore,
    *,
    heldout_tickers: Sequence[str] | None = None,
    max_cells: int = MAX_EVAL_CELLS,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`evaluate` for a saved checkpoint; held-out tickers default to those it was trained
    without (recorded in the checkpoint)."""
    from narrative_pipeline.training.inference import load_model

    model = load_model(checkpoint_path, device="cpu")
    inputs = model.training_inputs
    heldout = (
        list(inputs.get("heldout_tickers", [])) if heldout_tickers is None else heldout_tickers
    )
    evaluation, extras = evaluate(
        CheckpointPredictor(model, store.load_scalers()),
        store,
        heldout_tickers=heldout,
        val_fraction=float(inputs.get("val_fraction", 0.1)),
        latent_dim=model.typed_hparams.latent_dim,
        max_cells=max_cells,
        seed=seed,
    )
    evaluation["checkpoint"] = str(checkpoint_path)
    evaluation["config"] = {k: _plain(v) for k, v in dict(model.hparams).items()}
    evaluation["latent"] = latent_summary(model.typed_hparams)
    return evaluation, extras


def latent_summary(hparams: Any) -> dict[str, Any]:
    """Configured and effective latent size (capped below the input width: no bottleneck else)."""
    return {
        "configured": int(hparams.configured_latent_dim),
        "effective": int(hparams.latent_dim),
        "input_width": int(hparams.input_dim),
        "capped": int(hparams.latent_dim) != int(hparams.configured_latent_dim),
    }


def _plain(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str | type(None)) else str(value)


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    detail: dict[str, Any]


def judge(evaluation: dict[str, Any]) -> list[Verdict]:
    """The asset checks' verdicts on an evaluation (see assets/evaluation.py)."""
    model = evaluation["model"]
    splits = model["by_split"].values()
    finite = all(s.get("finite", True) for s in splits)
    deviation = max((s.get("latent_norm_max_deviation", 0.0) for s in splits), default=0.0)
    verdicts = [
        Verdict("finite_outputs", finite, {"finite": finite}),
        Verdict(
            "unit_norm_latents",
            deviation <= UNIT_NORM_TOLERANCE,
            {"latent_norm_max_deviation": deviation, "tolerance": UNIT_NORM_TOLERANCE},
        ),
    ]
    heldout_model = model["by_split"].get("heldout", {})
    heldout_median = evaluation["baselines"]["pair_median"]["by_split"].get("heldout", {})
    ours = heldout_model.get("value_median_rel_error")
    theirs = heldout_median.get("value_median_rel_error")
    verdicts.append(
        Verdict(
            "beats_pair_median_on_heldout_tickers",
            ours is not None and theirs is not None and ours < theirs,
            {"model": ours, "pair_median": theirs, "heldout_cells": heldout_model.get("cells", 0)},
        )
    )
    pca = evaluation["baselines"]["pca"]
    worse_value = model.get("value_median_rel_error", np.inf) > (
        pca.get("value_median_rel_error", np.inf) + PCA_TIE_PRECISION
    )
    worse_cosine = model.get("embedding_cosine", -1.0) < (
        pca.get("embedding_cosine", -1.0) - PCA_TIE_PRECISION
    )
    verdicts.append(
        Verdict(
            "not_worse_than_same_size_pca_on_both",
            not (worse_value and worse_cosine),
            {
                "model_value_median_rel_error": model.get("value_median_rel_error"),
                "pca_value_median_rel_error": pca.get("value_median_rel_error"),
                "model_embedding_cosine": model.get("embedding_cosine"),
                "pca_embedding_cosine": pca.get("embedding_cosine"),
                "pca_latent_dim": pca.get("latent_dim"),
                "tie_precision": PCA_TIE_PRECISION,
            },
        )
    )
    return verdicts


def evaluation_json(evaluation: dict[str, Any]) -> str:
    """evaluation.json: everything but the per-pair error maps (kept for the plot only)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "pair_errors"}
        return node

    return json.dumps(strip(evaluation), indent=2, default=str)
