"""Stage1Autoencoder shapes, gradients and losses; the per-pair value metrics."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from narrative_pipeline.training import Stage1Autoencoder
from narrative_pipeline.training.metrics import (
    inverse_scale_by_pair,
    per_pair_value_metrics,
    summarise_pair_metrics,
)


def tiny_model(**kwargs) -> Stage1Autoencoder:
    defaults = {"input_dim": 9, "latent_dim": 4, "hidden_dim": 16}
    return Stage1Autoencoder(**{**defaults, **kwargs})


def test_shapes_unit_latents_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.randn(32, 9)
    recon, z = model(x)
    assert recon.shape == (32, 9) and z.shape == (32, 4)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(32))
    loss = model._losses(x, recon)["loss"]
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_value_changes_the_latent():
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.randn(1, 9).repeat(2, 1)
    x[1, -1] += 3.0
    _, z = model(x)
    assert not torch.allclose(z[0], z[1])


def test_loss_weights_and_l1_option():
    torch.manual_seed(0)
    x, recon = torch.zeros(4, 3), torch.ones(4, 3) * 2
    mse = tiny_model(input_dim=3, value_weight=0.5)._losses(x, recon)
    assert mse["embedding_loss"] == pytest.approx(8.0)  # summed over the 2 embedding dims
    assert mse["loss"] == pytest.approx(8.0 + 0.5 * 4.0)
    l1 = tiny_model(input_dim=3, loss="l1")._losses(x, recon)
    assert l1["loss"] == pytest.approx(4.0 + 2.0)
    with pytest.raises(ValueError, match="loss"):
        tiny_model(loss="cauchy")


def test_hyperparameters_are_saved():
    model = tiny_model(learning_rate=3e-4, loss="l1")
    assert model.hparams.learning_rate == 3e-4 and model.hparams.loss == "l1"
    assert model.hparams.input_dim == 9
    opt = model.configure_optimizers()
    assert isinstance(opt["lr_scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)


def test_typed_hyperparameters_mirror_the_saved_ones():
    """The typed copy the model reads must hold exactly what checkpoints save (same names)."""
    model = tiny_model(learning_rate=3e-4, loss="huber", linear_value=False, t_max=7)
    assert asdict(model.typed_hparams) == dict(model.hparams)


def test_inverse_scaling_runs_each_pairs_own_scaler():
    rng = np.random.default_rng(0)
    values = [rng.normal(10, 2, 50), rng.normal(-1e6, 1e5, 50)]
    scalers = [StandardScaler().fit(v.reshape(-1, 1)) for v in values]
    pair_id = np.array([0, 1] * 50)
    actual = np.where(pair_id == 0, np.resize(values[0], 100), np.resize(values[1], 100))
    scaled = np.array(
        [scalers[p].transform([[a]])[0][0] for p, a in zip(pair_id, actual, strict=True)]
    )
    np.testing.assert_allclose(inverse_scale_by_pair(scaled, pair_id, scalers), actual)


def test_per_pair_metrics_and_worst_pair():
    actual = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 5.0, 0.0, 0.0])
    predicted = np.array([1.0, 2.0, 3.0, 11.0, 22.0, 33.0, 6.0, 1.0, 2.0])
    pair_id = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3])
    table = per_pair_value_metrics(predicted, actual, pair_id)
    assert table.loc[0, "median_rel_error"] == 0 and table.loc[0, "r2"] == 1
    assert table.loc[1, "median_rel_error"] == pytest.approx(0.1)
    assert table.loc[1, "r2"] == pytest.approx(1 - 14 / 200)
    assert np.isnan(table.loc[2, "r2"])  # one cell: R2 undefined
    assert np.isnan(table.loc[3, "median_rel_error"])  # all zeros: relative error undefined
    names = [("A", "USD"), ("B", "USD"), ("C", "shares"), ("D", "USD")]
    summary = summarise_pair_metrics(table, names)
    assert summary["worst_rel_error_pair"] == "C [shares]"
    assert summary["worst_r2_pair"] == "B [USD]"
    assert summary["r2_worst"] == pytest.approx(0.93)
