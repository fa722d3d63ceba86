"""Latent vectors from a trained Stage 1 checkpoint, for any cells of a UsGaapStore."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from narrative_pipeline.training.model import Stage1Autoencoder

if TYPE_CHECKING:
    from narrative_pipeline.us_gaap.store import UsGaapStore


def load_model(checkpoint_path: str | Path, device: str | None = None) -> Stage1Autoencoder:
    """The autoencoder of a checkpoint, in eval mode on `device` (default: cuda if present)."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = Stage1Autoencoder.load_from_checkpoint(str(path), map_location=device)
    return model.eval()


def model_inputs(cells: Any, embedding_matrix: np.ndarray) -> torch.Tensor:
    """`[PCA embedding of the pair, scaled value]` rows for CellArrays-like `cells`."""
    pair_id = np.asarray(cells.pair_id, dtype=np.int64)
    matrix = np.asarray(embedding_matrix, dtype=np.float32)
    if len(pair_id) and (pair_id.min() < 0 or pair_id.max() >= len(matrix)):
        raise ValueError(
            f"cells reference pair ids outside the embedding matrix ({len(matrix)} rows)"
        )
    x = np.empty((len(pair_id), matrix.shape[1] + 1), dtype=np.float32)
    x[:, :-1] = matrix[pair_id]
    x[:, -1] = np.asarray(cells.scaled, dtype=np.float32)
    return torch.from_numpy(x)


@torch.no_grad()
def encode_with_model(
    model: Stage1Autoencoder, x: torch.Tensor, batch_size: int = 65536
) -> np.ndarray:
    if x.shape[1] != model.typed_hparams.input_dim:
        raise ValueError(
            f"inputs have {x.shape[1]} features but the checkpoint expects "
            f"{model.typed_hparams.input_dim}: was the PCA refitted after training?"
        )
    parts = [
        model.encode(x[i : i + batch_size].to(model.device)).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    if not parts:
        return np.zeros((0, model.typed_hparams.latent_dim), dtype=np.float32)
    return torch.cat(parts).numpy()


def encode(
    checkpoint_path: str | Path,
    cells: Any,
    store: UsGaapStore | None = None,
    *,
    embedding_matrix: np.ndarray | None = None,
    batch_size: int = 65536,
    device: str | None = None,
) -> np.ndarray:
    """Latent vectors (float32 [n, latent_dim], unit norm) for `cells`.

    `cells` is a CellArrays (or anything with `pair_id` and `scaled`), or an array of cell
    indices read through `store.read_cells`. The PCA embeddings come from `embedding_matrix`
    or, when not given, from `store.get_embedding_matrix()`.
    """
    if not hasattr(cells, "pair_id"):
        if store is None:
            raise ValueError("encode got cell indices but no store to read them from")
        cells = store.read_cells(np.asarray(cells, dtype=np.int64))
    if embedding_matrix is None:
        if store is None:
            raise ValueError("encode needs a store or an embedding_matrix for the pair embeddings")
        embedding_matrix = store.get_embedding_matrix()[0]
    model = load_model(checkpoint_path, device)
    return encode_with_model(model, model_inputs(cells, embedding_matrix), batch_size)


def export_latents(
    checkpoint_path: str | Path,
    store: UsGaapStore,
    out_path: str | Path,
    *,
    chunk_size: int = 262144,
    device: str | None = None,
) -> int:
    """Write the latents of every cell (row i = cell i) to a .npy file; returns the cell count.

    Streams the store in chunks into a memory-mapped .npy so memory stays bounded.
    """
    model = load_model(checkpoint_path, device)
    matrix = store.get_embedding_matrix()[0]
    n_cells = int(store.get_triplet_count())
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".partial.npy")
    latents = np.lib.format.open_memmap(
        tmp_path, mode="w+", dtype=np.float32, shape=(n_cells, model.typed_hparams.latent_dim)
    )
    for start in range(0, n_cells, chunk_size):
        cells = store.read_cell_range(start, min(start + chunk_size, n_cells))
        latents[start : start + len(cells.pair_id)] = encode_with_model(
            model, model_inputs(cells, matrix)
        )
    latents.flush()
    del latents
    tmp_path.replace(out_path)  # only a complete file ever carries the requested name
    return n_cells
