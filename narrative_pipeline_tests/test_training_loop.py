"""train_stage1 on a small in-memory fake store: learning, checkpoints, resume, TensorBoard, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from narrative_pipeline.training import IterableConceptValueDataset, TrainConfig, train_stage1
from narrative_pipeline_tests.test_training_dataset import FakeStoreFactory

FACTORY = FakeStoreFactory(n_cells=3000, n_pairs=12, dim=6)
TINY = dict(
    batch_size=256, learning_rate=3e-3, latent_dim=8, hidden_dim=32, internal_batch_size=1024,
    val_fraction=0.2, seed=7,
)  # fmt: skip


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    return out, train_stage1(FACTORY, tiny_config(max_epochs=3), out)


def test_training_lowers_validation_loss_and_logs_metrics(three_epochs):
    _, result = three_epochs
    assert result.epochs_run == 3
    metrics = result.metrics
    for key in (
        "val_loss_epoch", "train_loss_epoch", "val/embedding_loss", "val/value_loss",
        "val/embedding_cosine", "val/median_rel_error", "val/r2_median", "val/r2_worst",
    ):  # fmt: skip
        assert key in metrics, key
    assert metrics["worst_r2_pair"].startswith("Concept")
    assert metrics["stopped_early"] is False
    # "best" follows the monitored metric (auto: the embedding loss for the default
    # pca_residual model, whose value output is the frozen linear path's), not the total MSE
    assert tiny_config().monitor_metric == "val/embedding_loss"
    assert result.best_val_loss <= metrics["val/embedding_loss"] + 1e-9
    assert 0 <= metrics["val/value_within_1pct"] <= metrics["val/value_within_10pct"] <= 1
    assert result.loss_curve_png.startswith(b"\x89PNG")


def test_validation_loss_falls_over_epochs(three_epochs):
    out, _ = three_epochs
    history = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    rows = next(v for k, v in history.items() if "LossHistory" in k)["epochs"]
    val = [r["val_loss_epoch"] for r in rows]
    assert len(val) == 3 and val[-1] < val[0]


def test_checkpoints_and_tensorboard_files_are_written(three_epochs):
    out, result = three_epochs
    assert Path(result.best_checkpoint_path).name == "stage1_resume.ckpt"
    assert Path(result.best_checkpoint_path).is_file()
    assert Path(result.last_checkpoint_path) == out / "checkpoints" / "last.ckpt"
    assert "stage1_autoencoder" in result.tensorboard_dir
    assert list(Path(result.tensorboard_dir).glob("events.out.tfevents.*"))
    assert (out / "stage1_loss_curve.png").read_bytes() == result.loss_curve_png


def test_resume_continues_epoch_count_and_optimizer_state(three_epochs, tmp_path, monkeypatch):
    out, _ = three_epochs
    shuffle_epochs = record_train_shuffle_epochs(monkeypatch)
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)
    before = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    (work / "checkpoints" / "last.ckpt").write_bytes(
        (out / "checkpoints" / "last.ckpt").read_bytes()
    )
    result = train_stage1(FACTORY, tiny_config(max_epochs=5, resume=True), work)
    after = torch.load(result.last_checkpoint_path, weights_only=False)
    assert result.epochs_run == 5
    assert after["epoch"] == before["epoch"] + 2
    steps_before = before["optimizer_states"][0]["state"][0]["step"]
    steps_after = after["optimizer_states"][0]["state"][0]["step"]
    per_epoch = steps_before / 3
    assert steps_after == pytest.approx(steps_before + 2 * per_epoch)
    assert after["global_step"] == before["global_step"] + 2 * per_epoch
    rows = next(v for k, v in after["callbacks"].items() if "LossHistory" in k)["epochs"]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert shuffle_epochs == [3, 4], "the resumed epochs must use their own shuffle order"


def record_train_shuffle_epochs(monkeypatch) -> list[int]:
    """Spy on the epoch each training iterator shuffles with (num_workers=0: same process)."""
    seen: list[int] = []
    original = IterableConceptValueDataset.__iter__

    def spying_iter(self):
        if self.split == "train":
            seen.append(self.epoch)
        return original(self)

    monkeypatch.setattr(IterableConceptValueDataset, "__iter__", spying_iter)
    return seen


def test_each_epoch_reshuffles(tmp_path, monkeypatch):
    shuffle_epochs = record_train_shuffle_epochs(monkeypatch)
    train_stage1(FACTORY, tiny_config(max_epochs=3, limit_train_batches=2), tmp_path)
    assert shuffle_epochs == [0, 1, 2]


def test_same_seed_reproduces_the_run(tmp_path):
    config = tiny_config(max_epochs=1, limit_train_batches=4)
    a = train_stage1(FACTORY, config, tmp_path / "a")
    b = train_stage1(FACTORY, config, tmp_path / "b")
    assert a.best_val_loss == b.best_val_loss
    wa = torch.load(a.last_checkpoint_path, weights_only=False)["state_dict"]
    wb = torch.load(b.last_checkpoint_path, weights_only=False)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_early_stopping_stops_before_max_epochs(tmp_path):
    config = tiny_config(max_epochs=50, patience=0, min_delta=1e9, limit_train_batches=2)
    result = train_stage1(FACTORY, config, tmp_path)
    # The starting state (validated before the first step) is the reference: the first epoch
    # does not beat it by min_delta, so with patience 0 the run stops after one epoch.
    assert result.epochs_run == 1 and result.metrics["stopped_early"] is True


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_epochs": -1}, "max_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"loss": "cauchy"}, "loss"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"torch_threads": 0}, "torch_threads"),
        ({"patience": -1}, "patience"),
        ({"resume": "/nonexistent/last.ckpt"}, "resume"),
        ({"precision": "8-bit"}, "precision"),
        ({"float32_matmul_precision": "low"}, "float32_matmul_precision"),
    ],
)
def test_bad_configuration_is_rejected(overrides, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**overrides)


def test_resume_without_a_checkpoint_fails_before_reading_the_store(tmp_path):
    def store_factory():
        raise AssertionError("the store must not be opened")

    with pytest.raises(ValueError, match="last.ckpt"):
        train_stage1(store_factory, TrainConfig(resume=True), tmp_path)


def test_resume_with_a_different_model_shape_is_rejected(three_epochs, tmp_path):
    out, _ = three_epochs
    config = dataclasses.replace(
        # 4, not 16: the input is 7 wide, so 8 and 16 are both capped to the same 5
        tiny_config(latent_dim=4),
        resume=str(out / "checkpoints" / "last.ckpt"),
    )
    with pytest.raises(ValueError, match="latent_dim"):
        train_stage1(FACTORY, config, tmp_path)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread; two spinning threads crawl on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_second_run_in_the_same_folder_keeps_the_checkpoint_names(tmp_path):
    """resume=True reads last.ckpt, so a fresh run must overwrite it, not write last-v1.ckpt."""
    train_stage1(FACTORY, tiny_config(max_epochs=1), tmp_path)
    second = train_stage1(FACTORY, tiny_config(max_epochs=1), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "stage1_resume.ckpt"]
    assert Path(second.last_checkpoint_path).name == "last.ckpt"
    resumed = train_stage1(FACTORY, tiny_config(max_epochs=2, resume=True), tmp_path)
    assert resumed.epochs_run == 2


def test_device_settings_reach_the_trainer_and_are_validated(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    seen = {}
    real_init = pl.Trainer.__init__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", spy)
    train_stage1(FACTORY, tiny_config(max_epochs=1, accelerator="cpu", devices=1), tmp_path)
    assert (seen["devices"], seen["strategy"], seen["num_nodes"]) == (1, "auto", 1)
    with pytest.raises(ValueError, match="devices"):
        tiny_config(devices=0)
    with pytest.raises(ValueError, match="num_nodes"):
        tiny_config(num_nodes=0)


def test_precision_settings_reach_the_trainer_and_torch_for_the_fit_only(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    seen: dict = {}
    real_init, real_fit = pl.Trainer.__init__, pl.Trainer.fit

    def spy_init(self, *args, **kwargs):
        seen.update(kwargs)
        real_init(self, *args, **kwargs)

    def spy_fit(self, *args, **kwargs):
        seen["matmul_during_fit"] = torch.get_float32_matmul_precision()
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", spy_init)
    monkeypatch.setattr(pl.Trainer, "fit", spy_fit)
    before = torch.get_float32_matmul_precision()
    config = tiny_config(max_epochs=1, precision="bf16-mixed", float32_matmul_precision="high")
    result = train_stage1(FACTORY, config, tmp_path)
    assert seen["precision"] == "bf16-mixed" and seen["matmul_during_fit"] == "high"
    assert torch.get_float32_matmul_precision() == before  # restored after the fit
    assert result.epochs_run == 1 and Path(result.last_checkpoint_path).is_file()
