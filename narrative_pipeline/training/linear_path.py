"""The frozen PCA path of the `pca_residual` Stage 1 architecture, and its fit on training cells.

Why: on held-out tickers a same-size linear PCA autoencoder beat the plain MLP autoencoder on
both value error and embedding cosine (benchmarks/RESULTS.md, "Model quality"): PCA keeps the
heavy-tailed scaled value almost exactly in its first component. So the model starts AS that
PCA and learns only a nonlinear residual on top: encoder = PCA projection + residual, decoder =
PCA reconstruction + residual, both residuals zero-initialised, the PCA part frozen (buffers).

Unit-norm latents: a PCA code is not a unit vector, and normalising it would lose its length
(the value). The code `c` (m = latent_dim - 1 numbers) is lifted onto the unit sphere of
R^latent_dim as `u = normalise([c / s, 1])`, which is invertible (`c = s * u[:m] / u[m]`). The
latent is therefore a unit vector of width `latent_dim` carrying `latent_dim - 1` degrees of
freedom, and the linear path holds one component FEWER than the same-size PCA baseline: the
comparison is, if anything, tilted against the model. `s` (the median code norm on the training
cells) keeps typical latents away from the lifting coordinate's extremes.

Linear value (`linear_value`, the default): the value is what PCA reconstructs best (1e-6
relative error), and a free residual trained on MSE in scaled space only added noise to it
(held-out value error 2e-6 -> 0.007 at latent 32). So the encoder residual is kept orthogonal
to the code direction that decodes to the value, and the decoder residual leaves the value
output alone: the value is exactly the linear path's, and the residuals work on the embedding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

PCA_FIT_MAX_CELLS = 200_000  # training cells the linear path is fitted on (seeded sample beyond)


class PcaPath(nn.Module):
    """Frozen `mean`, `components` [input_dim, m] and code `scale`: project, lift, unlift, rebuild.

    The buffers are part of the state dict, so checkpoints, resume and warm start carry the
    exact linear path they were trained with. Until `fit` runs, the path is the zero map.
    """

    # Registered buffers, declared so type checkers see tensors (nn.Module's __getattr__ is
    # typed Tensor | Module).
    mean: torch.Tensor
    components: torch.Tensor
    scale: torch.Tensor

    def __init__(self, input_dim: int, code_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("components", torch.zeros(input_dim, code_dim))
        self.register_buffer("scale", torch.ones(()))

    @property
    def code_dim(self) -> int:
        return int(self.components.shape[1])

    def fit(self, x: np.ndarray) -> None:
        """PCA of the training inputs `x` [n, input_dim] (float64 SVD), as many components as
        the code holds and the data allow; the rest stay zero."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"PCA path expects inputs of width {self.mean.shape[0]}, got {x.shape}"
            )
        if len(x) < 2:
            raise ValueError("the PCA path needs at least 2 training cells")
        data = np.asarray(x, dtype=np.float64)
        mean = data.mean(axis=0)
        _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
        k = min(self.code_dim, vt.shape[0])
        components = np.zeros((data.shape[1], self.code_dim))
        components[:, :k] = vt[:k].T
        codes = (data - mean) @ components
        scale = float(np.median(np.linalg.norm(codes, axis=1)))
        self.mean.copy_(torch.from_numpy(mean))
        self.components.copy_(torch.from_numpy(components))
        self.scale.fill_(scale if scale > 0 else 1.0)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components

    def reconstruct(self, code: torch.Tensor) -> torch.Tensor:
        return self.mean + code @ self.components.T

    def without_value_direction(self, residual: torch.Tensor) -> torch.Tensor:
        """`residual` [n, m] minus its part along the code direction that decodes to the value
        (the last input column), so adding it leaves the linear value reconstruction as is."""
        value_row = self.components[-1]
        norm2 = value_row.dot(value_row)
        if norm2 <= 0:
            return residual
        return residual - (residual @ value_row)[:, None] * value_row / norm2

    def lift(self, code: torch.Tensor) -> torch.Tensor:
        """Code [n, m] -> unit vectors [n, m + 1] (invertible by `unlift`)."""
        ones = torch.ones_like(code[:, :1])
        return nn.functional.normalize(torch.cat([code / self.scale, ones], dim=-1), dim=-1)

    def unlift(self, latent: torch.Tensor) -> torch.Tensor:
        last = latent[:, -1:].clamp_min(torch.finfo(latent.dtype).tiny)
        return self.scale * latent[:, :-1] / last
