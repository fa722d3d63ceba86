"""Bounded, incremental training: max_time, warm start or retrain, cancel keeps the outputs,
one progress line per epoch, the budget-tied learning rate, no Lightning tips."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest
import torch

from narrative_pipeline.training import Stage1Autoencoder, train_stage1
from narrative_pipeline.training.callbacks import budget_progress, cosine_rate
from narrative_pipeline_tests.test_training_dataset import FakeStoreFactory
from narrative_pipeline_tests.test_training_loop import (  # noqa: F401 (autouse fixture)
    FACTORY,
    one_torch_thread,
    tiny_config,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    lines: list[str] = []
    # The MLP alone: its first epoch is far from converged, so a warm start is measurable by
    # its first validation loss (a pca_residual model starts at the PCA optimum already; its
    # warm start is tested in test_training_pca_residual.py).
    result = train_stage1(FACTORY, mlp_config(max_epochs=3), out, progress=lines.append)
    return out, result, lines


def mlp_config(**overrides):
    return tiny_config(architecture="mlp", **overrides)


def copy_of_run(out, tmp_path):
    """A folder holding the module run's last.ckpt, so each test warm-starts from the same one."""
    (tmp_path / "checkpoints").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(
        (out / "checkpoints" / "last.ckpt").read_bytes()
    )
    return tmp_path


def first_val_loss(path) -> float:
    state = torch.load(path, weights_only=False)["callbacks"]
    rows = next(v for k, v in state.items() if "LossHistory" in k)["epochs"]
    return rows[0]["val_loss_epoch"]


def test_one_progress_line_per_epoch_with_losses_error_and_eta(trained):
    _, _, lines = trained
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [
        "epoch 0/3 (starting state, before any training step)", "epoch 1/3", "epoch 2/3",
        "epoch 3/3",
    ]  # fmt: skip
    assert "val value median rel error n/a" not in epochs[0]
    for line in epochs[1:]:
        assert "train loss" in line and "val loss" in line and "ETA" in line
        assert "val value median rel error n/a" not in line


def test_max_time_stops_a_long_run(tmp_path):
    started = time.monotonic()
    result = train_stage1(
        FakeStoreFactory(n_cells=20000), tiny_config(max_epochs=10_000, max_time=3.0), tmp_path
    )
    assert time.monotonic() - started < 60
    assert 1 <= result.epochs_run < 10_000
    assert result.metrics["stopped_for_time"] or result.epochs_run < 10_000
    saved = json.loads((tmp_path / "final_metrics.json").read_text())
    assert saved["epochs_run"] == result.epochs_run


def test_warm_start_continues_from_the_previous_weights(trained, tmp_path):
    out = copy_of_run(trained[0], tmp_path)
    cold = first_val_loss(out / "checkpoints" / "last.ckpt")
    result = train_stage1(FACTORY, mlp_config(max_epochs=1, warm_start=True), out)
    assert result.warm_start.startswith("warm start from")
    warm = first_val_loss(out / "checkpoints" / "last.ckpt")  # the warm run's own history
    assert warm < cold, "a warm start must begin where the previous run ended, not at random"
    assert result.epochs_run == 1  # a fresh budget, not the old epoch count


def test_warm_start_retrains_when_the_input_width_changes(trained, tmp_path):
    out = copy_of_run(trained[0], tmp_path)
    wider = FakeStoreFactory(n_cells=3000, n_pairs=12, dim=7)
    result = train_stage1(wider, mlp_config(max_epochs=1, warm_start=True), out)
    assert result.warm_start.startswith("full retrain: model shape changed")
    assert "input_dim" in result.warm_start


def test_warm_start_retrains_when_the_pca_changed_at_the_same_width(trained, tmp_path):
    out = copy_of_run(trained[0], tmp_path)
    refitted = FakeStoreFactory(n_cells=3000, n_pairs=12, dim=6, seed=5)
    result = train_stage1(refitted, mlp_config(max_epochs=1, warm_start=True), out)
    assert result.warm_start.startswith("full retrain: the PCA embeddings changed")


def test_sigterm_saves_last_checkpoint_final_metrics_and_plot(tmp_path, monkeypatch):
    def terminate_after_second_epoch(self):
        if self.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Stage1Autoencoder, "on_train_epoch_end", terminate_after_second_epoch)
    # A known previous handler: Lightning chains to whatever was installed before (an earlier
    # test's may exit the process), and a harmless one keeps the SIGTERM from killing pytest.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with pytest.raises(BaseException) as raised:
            train_stage1(FACTORY, tiny_config(max_epochs=50), tmp_path)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "SIGTERM" in type(raised.value).__name__
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["metrics"]["interrupted"] == "SIGTERMException"
    assert final["epochs_run"] >= 1 and "val_loss_epoch" in final["metrics"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "stage1_loss_curve.png").read_bytes().startswith(b"\x89PNG")


def test_learning_rate_only_falls_over_the_budget():
    rates = [cosine_rate(1e-3, 1e-6, budget_progress(e, 10, 0.0, None)) for e in range(11)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-6)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    # The time share counts too, and progress never exceeds the end of the schedule.
    assert budget_progress(1, 100, 50.0, 100.0) == 0.5
    assert budget_progress(1, 100, 500.0, 100.0) == 1.0


def test_lightning_tips_are_not_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train_stage1(FACTORY, tiny_config(max_epochs=1), tmp_path)
    assert not [r for r in caplog.records if "Tip:" in r.getMessage()]
