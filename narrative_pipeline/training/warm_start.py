"""Warm start: begin a run from a previous checkpoint's weights when its inputs still mean the same.

A checkpoint records an *input signature*: the PCA embedding rows of a few pairs, by name. A
later run may reuse the weights only when the weight shapes match AND those pairs (the ones both
runs know) still have the same embedding; a refitted PCA rotates the components, so the same
width does not mean the same input. Anything else is a full retrain, and the reason is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from narrative_pipeline.training.model import TRAINING_INPUTS_KEY

# Hyper-parameters that fix the weight shapes: a resume or warm start must not change them.
SHAPE_HPARAMS = ("input_dim", "latent_dim", "hidden_dim", "n_hidden_layers", "architecture")
# What a checkpoint written before a hyper-parameter existed was trained with.
HPARAM_DEFAULTS = {"architecture": "mlp"}
SIGNATURE_PAIRS = 64  # pairs whose embedding rows a checkpoint keeps (a few KiB)
SIGNATURE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class WarmStart:
    """The checkpoint to take weights from (None: train from scratch) and why."""

    path: Path | None
    reason: str


def input_signature(matrix: np.ndarray, pair_names: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Embedding rows of the first `SIGNATURE_PAIRS` pairs in name order (stable across builds)."""
    names = sorted((str(c), str(u)) for c, u in pair_names)[:SIGNATURE_PAIRS]
    row_of = {(str(c), str(u)): i for i, (c, u) in enumerate(pair_names)}
    rows = np.asarray(matrix, dtype=np.float32)[[row_of[n] for n in names]]
    return {"pairs": [list(n) for n in names], "rows": rows.tolist()}


def signature_mismatch(saved: dict[str, Any], matrix: np.ndarray, pair_names: Sequence) -> str:
    """Why `saved` does not describe the current inputs ("" when it does)."""
    if not saved or not saved.get("pairs"):
        return "the checkpoint has no input signature"
    row_of = {(str(c), str(u)): i for i, (c, u) in enumerate(pair_names)}
    shared = [(k, tuple(p)) for k, p in enumerate(saved["pairs"]) if tuple(p) in row_of]
    if not shared:
        return "no pair of the checkpoint's signature is in the store any more"
    old = np.asarray(saved["rows"], dtype=np.float32)[[k for k, _ in shared]]
    new = np.asarray(matrix, dtype=np.float32)[[row_of[p] for _, p in shared]]
    if old.shape != new.shape:
        return f"embedding width changed ({old.shape[1]} -> {new.shape[1]})"
    drift = float(np.abs(old - new).max())
    if drift > SIGNATURE_TOLERANCE:
        return f"the PCA embeddings changed (max difference {drift:.3g} on shared pairs)"
    return ""


def shape_mismatch(saved_hparams: dict[str, Any], model_hparams: dict[str, Any]) -> str:
    """Which weight-shape hyper-parameters differ ("" when none)."""
    changed = [
        f"{k}: checkpoint {saved_hparams.get(k, HPARAM_DEFAULTS.get(k))} vs now {model_hparams[k]}"
        for k in SHAPE_HPARAMS
        if saved_hparams.get(k, HPARAM_DEFAULTS.get(k)) != model_hparams[k]
    ]
    return ", ".join(changed)


def choose_warm_start(
    candidate: Path | None,
    model_hparams: dict[str, Any],
    matrix: np.ndarray,
    pair_names: Sequence[tuple[str, str]],
) -> WarmStart:
    """Use `candidate` when it exists and fits the current model and inputs, else retrain."""
    if candidate is None:
        return WarmStart(None, "full training (warm start not requested)")
    if not candidate.is_file():
        return WarmStart(None, f"full training: no previous checkpoint at {candidate}")
    saved = torch.load(candidate, map_location="cpu", weights_only=False)
    shapes = shape_mismatch(saved.get("hyper_parameters", {}), model_hparams)
    if shapes:
        return WarmStart(None, f"full retrain: model shape changed ({shapes})")
    inputs = signature_mismatch(
        saved.get(TRAINING_INPUTS_KEY, {}).get("signature", {}), matrix, pair_names
    )
    if inputs:
        return WarmStart(None, f"full retrain: {inputs}")
    return WarmStart(candidate, f"warm start from {candidate}")


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy a checkpoint's weights into `model` (not its optimizer state or epoch count)."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
