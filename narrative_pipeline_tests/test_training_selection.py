"""Issue 11, wave 3: the latent is a real bottleneck, and a run never ends worse than it started.

- A configured latent not below the input width is capped (TrainConfig.effective_latent_dim);
  configured and effective sizes are saved in the checkpoint and the evaluation.
- The starting state (cold: the initialisation; warm: the previous checkpoint) is validated
  before the first step and competes for "best": a run whose training worsens the monitored
  metric (here: a huge learning rate) ends with the starting weights, and a warm run does not
  replace a better previous checkpoint.
- The PCA comparison treats float32 rounding as a tie, and only that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from narrative_pipeline.training import TrainConfig, train_stage1
from narrative_pipeline.training.config import BOTTLENECK_FRACTION
from narrative_pipeline.training.evaluation import (
    FLOAT32_EPS,
    PCA_TIE_PRECISION,
    evaluate_checkpoint,
    judge,
)
from narrative_pipeline_tests.test_training_dataset import FakeUsGaapStore
from narrative_pipeline_tests.test_training_loop import (  # noqa: F401 (autouse fixture)
    FACTORY,
    one_torch_thread,
    tiny_config,
)

HUGE_LEARNING_RATE = 5.0  # one Adam epoch at this rate wrecks the residual branches


def state_of(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_latent_not_below_the_input_width_is_capped_to_a_bottleneck():
    assert BOTTLENECK_FRACTION == 0.8
    config = TrainConfig(latent_dim=96)
    assert config.effective_latent_dim(32) == 25  # the generated sample's width
    assert config.effective_latent_dim(96) == 76  # equal to the width: no bottleneck either
    assert config.effective_latent_dim(120) == 96  # a bottleneck already: unchanged
    assert TrainConfig(latent_dim=8).effective_latent_dim(32) == 8
    # pca_residual needs a code and its lift; the MLP alone one number
    assert TrainConfig(latent_dim=8).effective_latent_dim(2) == 2
    assert TrainConfig(latent_dim=8, architecture="mlp").effective_latent_dim(2) == 1


def test_the_capped_latent_is_used_logged_and_saved_with_the_configured_one(tmp_path):
    lines: list[str] = []
    # FACTORY's embeddings are 6 wide: the input is 7, so latent 8 is capped to int(0.8 * 7)
    result = train_stage1(FACTORY, tiny_config(latent_dim=8, max_epochs=1), tmp_path,
                          progress=lines.append)  # fmt: skip
    assert (result.latent_dim, result.configured_latent_dim) == (5, 8)
    saved = torch.load(result.best_checkpoint_path, weights_only=False)["hyper_parameters"]
    assert (saved["latent_dim"], saved["configured_latent_dim"], saved["input_dim"]) == (5, 8, 7)
    assert any("latent 5 (configured 8 is not below the input width 7" in line for line in lines)
    evaluation, extras = evaluate_checkpoint(result.best_checkpoint_path, FACTORY())
    assert evaluation["latent"] == {"configured": 8, "effective": 5, "input_width": 7,
                                    "capped": True}  # fmt: skip
    assert evaluation["baselines"]["pca"]["latent_dim"] == 5  # the same size as the model's
    assert extras["latents"].shape[1] == 5


def test_a_run_whose_training_worsens_ends_with_the_starting_weights(tmp_path):
    lines: list[str] = []
    config = tiny_config(max_epochs=1, learning_rate=HUGE_LEARNING_RATE)
    result = train_stage1(FACTORY, config, tmp_path, progress=lines.append)
    assert result.kept_starting_state is True
    assert result.best_val_loss == pytest.approx(result.starting_score)
    best, last = state_of(result.best_checkpoint_path), state_of(result.last_checkpoint_path)
    # The starting state of pca_residual: the PCA path with zero residual heads.
    for head in ("to_latent", "to_output"):
        assert not best[f"{head}.weight"].any() and not best[f"{head}.bias"].any()
    assert last["to_output.weight"].abs().max() > 0.1  # training did move (and worsen) them
    assert any(line.startswith("epoch 0/1 (starting state") for line in lines)
    assert any("kept the starting state (the PCA initialisation)" in line for line in lines)


def test_a_run_that_improves_replaces_the_starting_state(tmp_path):
    result = train_stage1(FACTORY, tiny_config(max_epochs=3), tmp_path)
    assert result.kept_starting_state is False
    assert result.best_val_loss < result.starting_score
    assert state_of(result.best_checkpoint_path)["to_output.weight"].any()


def test_a_warm_run_keeps_the_previous_checkpoint_when_it_got_worse(tmp_path):
    previous = train_stage1(FACTORY, tiny_config(max_epochs=3), tmp_path)
    assert previous.kept_starting_state is False
    kept = state_of(previous.best_checkpoint_path)
    lines: list[str] = []
    warm = tiny_config(max_epochs=1, learning_rate=HUGE_LEARNING_RATE, warm_start=True)
    result = train_stage1(FACTORY, warm, tmp_path, progress=lines.append)
    assert result.warm_start.startswith("warm start from") and "stage1_resume" in result.warm_start
    # Scored on the same validation metric before the warm run's first step, the previous
    # best is kept: same weights, same score.
    assert result.kept_starting_state is True
    assert result.starting_score == pytest.approx(previous.best_val_loss, rel=1e-5)
    assert same_weights(state_of(result.best_checkpoint_path), kept)
    assert not same_weights(state_of(result.last_checkpoint_path), kept)
    assert any(
        "kept the starting state (the warm-start checkpoint stage1_resume.ckpt)" in line
        for line in lines
    )


def evaluation_with(model_value: float, model_cosine: float, pca_value: float, pca_cosine: float):
    figures = {"by_split": {}}
    return {
        "model": {
            **figures,
            "value_median_rel_error": model_value,
            "embedding_cosine": model_cosine,
        },
        "baselines": {
            "pca": {"value_median_rel_error": pca_value, "embedding_cosine": pca_cosine},
            "pair_median": {"by_split": {}},
        },
    }


def pca_verdict(evaluation) -> bool:
    return next(
        v for v in judge(evaluation) if v.name == "not_worse_than_same_size_pca_on_both"
    ).passed


def test_float32_rounding_cannot_flip_the_pca_check_but_real_losses_still_fail():
    assert PCA_TIE_PRECISION == 2 * FLOAT32_EPS == pytest.approx(2.38e-7, rel=1e-2)
    # Measured with no bottleneck (make demo before wave 3): both exact but for rounding.
    assert pca_verdict(evaluation_with(1.35e-7, 1.0 - 1e-7, 1.9e-8, 1.0))
    # Just past the precision on both figures: a real loss, the check fails.
    past = PCA_TIE_PRECISION * 1.5
    assert not pca_verdict(evaluation_with(1e-6 + past, 0.99 - past, 1e-6, 0.99))
    # The loss seen in wave 2 at 1-2 epochs (cosine 0.9897 vs 0.9907): still fails when the
    # value is worse too by more than the precision.
    assert not pca_verdict(evaluation_with(4.1e-7 + 3e-7, 0.9897, 4.1e-7, 0.9907))


def test_the_evaluation_of_a_starting_state_model_ties_pca_when_nothing_is_dropped(tmp_path):
    """Input rank below the latent: the PCA path keeps everything, like the PCA baseline; the
    check must pass on the untrained (starting state) checkpoint despite float32 rounding."""
    factory = FakeUsGaapStoreFactoryLowRank()
    result = train_stage1(
        factory, tiny_config(max_epochs=1, learning_rate=HUGE_LEARNING_RATE), tmp_path
    )
    assert result.kept_starting_state is True
    evaluation, _ = evaluate_checkpoint(result.best_checkpoint_path, factory())
    verdicts = {v.name: v.passed for v in judge(evaluation)}
    assert verdicts["not_worse_than_same_size_pca_on_both"], evaluation["model"]


class FakeUsGaapStoreFactoryLowRank:
    """Stand-in store whose 6-wide embeddings span 2 dimensions (input rank 3 < latent 5)."""

    def __call__(self) -> FakeUsGaapStore:
        store = FakeUsGaapStore(n_cells=3000, n_pairs=12, dim=6)
        rng = np.random.default_rng(3)
        basis = rng.normal(size=(2, store.matrix.shape[1]))
        store.matrix = (rng.normal(size=(store.matrix.shape[0], 2)) @ basis).astype(np.float32)
        return store
