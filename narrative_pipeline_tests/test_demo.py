"""`narrative-pipeline demo`: the store tour runs, and the closing lines point at what exists.

The full asset graph that the demo materialises is exercised by test_dagster_assets.py; here
only the demo's own code is run (the store tour for real, the closing summary on a data folder
laid out as a training run leaves it).
"""

from __future__ import annotations

import subprocess
import sys

from narrative_pipeline.assets.metadata import figure_text
from narrative_pipeline.demo import where_to_look


def test_store_tour_runs_and_says_what_it_did():
    out = subprocess.run(
        [sys.executable, "-m", "narrative_pipeline.cli", "demo", "--store-only"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "wrote 10,000 entries" in out
    assert "compacted: 5,000 live" in out
    assert "key-1 = b'overwritten'" in out


def test_closing_lines_name_the_checkpoint_plots_tensorboard_and_ui(tmp_path, monkeypatch):
    monkeypatch.delenv("NARRATIVE_DB_URL", raising=False)
    monkeypatch.delenv("MYSQL_HOST", raising=False)
    monkeypatch.delenv("SIMD_R_DRIVE_SERVER_HOST", raising=False)
    monkeypatch.setenv("NARRATIVE_DATA_DIR", str(tmp_path))
    (tmp_path / "training" / "checkpoints").mkdir(parents=True)
    (tmp_path / "training" / "checkpoints" / "stage1_resume.ckpt").write_bytes(b"x")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "pca_explained_variance.png").write_bytes(b"x")

    text = where_to_look(tmp_path)

    assert str(tmp_path / "training" / "checkpoints" / "stage1_resume.ckpt") in text
    assert str(tmp_path / "plots" / "pca_explained_variance.png") in text
    assert f"tensorboard --logdir {tmp_path / 'training'}" in text
    assert "make ui" in text and "http://127.0.0.1:3000" in text
    assert str(tmp_path / "narrative.sqlite") in text


def test_closing_lines_leave_out_what_a_store_only_run_did_not_make(tmp_path, monkeypatch):
    monkeypatch.setenv("NARRATIVE_DATA_DIR", str(tmp_path))
    text = where_to_look(tmp_path)
    assert "checkpoint:" not in text and "plots:" not in text and "TensorBoard" not in text


def test_figures_are_printed_rounded():
    assert figure_text(0.123456789) == "0.1235"
    assert figure_text(12.3456789) == "12.35"
    assert figure_text(612345.678) == "612,346"
    assert figure_text(7) == "7"
    assert figure_text(float("inf")) == "inf"
