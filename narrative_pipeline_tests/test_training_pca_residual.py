"""The `pca_residual` Stage 1 architecture: a frozen PCA path plus zero-initialised residuals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from narrative_pipeline.training import Stage1Autoencoder, TrainConfig, train_stage1
from narrative_pipeline.training.evaluation import read_split, split_indices
from narrative_pipeline.training.inference import load_model
from narrative_pipeline.training.warm_start import shape_mismatch
from narrative_pipeline_tests.test_training_dataset import FakeStoreFactory
from narrative_pipeline_tests.test_training_loop import (  # noqa: F401 (autouse fixture)
    FACTORY,
    one_torch_thread,
    tiny_config,
)


def training_like_inputs(n: int = 600, width: int = 13, seed: int = 0) -> np.ndarray:
    """Correlated columns plus a heavy-tailed last column (the scaled value)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)) @ rng.normal(size=(width, width))
    x[:, -1] = rng.standard_t(df=2, size=n) * 50
    return x.astype(np.float32)


def fitted_model(latent_dim: int = 6, **kwargs) -> tuple[Stage1Autoencoder, np.ndarray]:
    torch.manual_seed(0)
    x = training_like_inputs()
    model = Stage1Autoencoder(
        input_dim=x.shape[1], latent_dim=latent_dim, hidden_dim=16,
        architecture="pca_residual", **kwargs,
    )  # fmt: skip
    model.fit_linear_path(x)
    return model.eval(), x


def randomise_residuals(model: Stage1Autoencoder) -> None:
    with torch.no_grad():
        for layer in (model.to_latent, model.to_output):
            layer.weight.normal_(std=0.3)
            layer.bias.normal_(std=0.3)


@torch.no_grad()
def test_at_init_it_is_the_pca_autoencoder_with_one_component_less_and_unit_latents():
    model, x = fitted_model(latent_dim=6)
    recon, z = model(torch.from_numpy(x))
    pca = PCA(n_components=5).fit(x.astype(np.float64))  # 6-wide unit latent: 5 free numbers
    expected = pca.inverse_transform(pca.transform(x.astype(np.float64)))
    scale = np.abs(expected).max(axis=0)
    np.testing.assert_allclose(recon.numpy() / scale, expected / scale, atol=2e-5)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(x)))
    assert z.shape == (len(x), 6)


def test_residual_branches_start_at_zero_and_receive_gradients():
    model, x = fitted_model()
    for layer in (model.to_latent, model.to_output):
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    with torch.no_grad():  # the hidden MLP layers do not matter while the heads are zero
        before, _ = model(torch.from_numpy(x))
        for block in model.encoder_blocks:
            block.linear.weight.mul_(3.0)
        after, _ = model(torch.from_numpy(x))
    torch.testing.assert_close(before, after)
    model.train()
    recon, _ = model(torch.from_numpy(x))
    model._losses(torch.from_numpy(x), recon)["loss"].backward()
    assert model.to_output.weight.grad.abs().sum() > 0
    assert model.to_latent.weight.grad.abs().sum() > 0
    trainable = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith("pca_path") for name in trainable), "the PCA path is frozen"


@torch.no_grad()
def test_linear_value_keeps_the_value_output_exactly_the_linear_paths():
    model, x = fitted_model(linear_value=True)
    linear, _ = model(torch.from_numpy(x))
    randomise_residuals(model)
    trained, z = model(torch.from_numpy(x))
    torch.testing.assert_close(trained[:, -1], linear[:, -1], rtol=1e-4, atol=1e-3)
    assert not torch.allclose(trained[:, :-1], linear[:, :-1], atol=1e-2)  # embedding moved
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(x)))

    free, _ = fitted_model(linear_value=False)
    randomise_residuals(free)
    assert not torch.allclose(free(torch.from_numpy(x))[0][:, -1], linear[:, -1], atol=1e-2)


@torch.no_grad()
def test_lift_and_unlift_are_inverse_even_for_extreme_codes():
    model, _ = fitted_model()
    code = torch.tensor([[0.0] * 5, [1.0, -2.0, 3.0, 0.5, 0.0], [4000.0, 0.0, 0.0, 0.0, -1.0]])
    lifted = model.pca_path.lift(code)
    torch.testing.assert_close(lifted.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(model.pca_path.unlift(lifted), code, rtol=1e-5, atol=1e-4)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="architecture"):
        Stage1Autoencoder(input_dim=5, architecture="transformer")
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        Stage1Autoencoder(input_dim=5, latent_dim=1, architecture="pca_residual")
    with pytest.raises(ValueError, match="width"):
        fitted_model()[0].fit_linear_path(np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="fit_linear_path needs"):
        Stage1Autoencoder(input_dim=5).fit_linear_path(np.zeros((10, 5), np.float32))
    with pytest.raises(ValueError, match="architecture"):
        TrainConfig(architecture="transformer")


def test_monitor_auto_follows_what_training_can_move():
    assert TrainConfig().monitor_metric == "val/embedding_loss"
    assert TrainConfig(linear_value=False).monitor_metric == "val/value_median_rel_error"
    assert TrainConfig(architecture="mlp").monitor_metric == "val/value_median_rel_error"
    assert TrainConfig(monitor="val_loss_epoch").monitor_metric == "val_loss_epoch"


@pytest.fixture(scope="module")
def trained_pca_residual(tmp_path_factory):
    out = tmp_path_factory.mktemp("pca_residual")
    config = tiny_config(max_epochs=2, latent_dim=4, heldout_tickers=["TK3"])
    return out, config, train_stage1(FACTORY, config, out)


def test_training_fits_the_path_on_training_cells_only_and_saves_it(trained_pca_residual):
    out, config, result = trained_pca_residual
    store = FACTORY()
    matrix, _ = store.get_embedding_matrix()
    indices = split_indices(store, ["TK3"], config.val_fraction)
    train = read_split(store, "train", indices["train"], matrix, 10**6, 0)
    expected = PCA(n_components=3).fit(train.x.astype(np.float64))
    model = load_model(result.best_checkpoint_path, device="cpu")
    components = model.pca_path.components.numpy()[:, :3]
    # same subspace as the PCA of the training split (signs may differ)
    np.testing.assert_allclose(np.abs(components.T @ expected.components_.T), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(model.pca_path.mean.numpy(), expected.mean_, atol=1e-5)
    everything = np.concatenate([train.x, read_split(store, "heldout", indices["heldout"],
                                                     matrix, 10**6, 0).x])  # fmt: skip
    assert not np.allclose(model.pca_path.mean.numpy(), everything.mean(axis=0), atol=1e-4)


def test_warm_start_keeps_the_previous_linear_path_and_weights(trained_pca_residual, tmp_path):
    out, config, _ = trained_pca_residual
    (tmp_path / "checkpoints").mkdir()
    previous = (out / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(previous)
    old = load_model(tmp_path / "checkpoints" / "last.ckpt", device="cpu")
    more = FakeStoreFactory(n_cells=3000, n_pairs=12, dim=6)  # same PCA embeddings
    warm_config = tiny_config(
        max_epochs=1, latent_dim=4, heldout_tickers=["TK3"], warm_start=True, learning_rate=1e-12
    )
    result = train_stage1(more, warm_config, tmp_path)
    assert result.warm_start.startswith("warm start from")
    new = load_model(tmp_path / "checkpoints" / "last.ckpt", device="cpu")
    for name, tensor in old.state_dict().items():
        torch.testing.assert_close(new.state_dict()[name], tensor, atol=1e-6, rtol=1e-5)


def test_warm_start_across_architectures_retrains_and_old_checkpoints_count_as_mlp(
    trained_pca_residual, tmp_path
):
    out, _, _ = trained_pca_residual
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(
        (out / "checkpoints" / "last.ckpt").read_bytes()
    )
    mlp = tiny_config(max_epochs=1, latent_dim=4, architecture="mlp", warm_start=True)
    result = train_stage1(FACTORY, mlp, tmp_path)
    assert result.warm_start.startswith("full retrain: model shape changed")
    assert "architecture: checkpoint pca_residual vs now mlp" in result.warm_start
    shapes = {"input_dim": 7, "latent_dim": 4, "hidden_dim": 32, "n_hidden_layers": 2}
    assert shape_mismatch(shapes, {**shapes, "architecture": "mlp"}) == ""  # pre-wave-2 file
    assert "architecture" in shape_mismatch(shapes, {**shapes, "architecture": "pca_residual"})
