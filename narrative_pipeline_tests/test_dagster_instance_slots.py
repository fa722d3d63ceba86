"""A killed run's concurrency slot comes back (issue 12): the instance files as shipped, in a
temporary DAGSTER_HOME, with the daemon's own slot-freeing iteration.

The `gpu` pool has limit 1: without `run_monitoring.free_slots_after_run_end_seconds` a run that
ended while its training step held the slot would block every later training forever.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring import concurrency as slot_daemon

# The Compose instance's MariaDB fixture (needs dagster-mysql, the `deploy` extra).
with contextlib.suppress(pytest.skip.Exception):
    from narrative_pipeline_tests.test_deploy_instance_mysql import dagster_home  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTANCE_FILES = [REPO_ROOT / "dagster.yaml", REPO_ROOT / "docker" / "dagster.yaml"]
POOL = "gpu"


def _free_after(path: Path) -> int:
    return yaml.safe_load(path.read_text())["run_monitoring"]["free_slots_after_run_end_seconds"]


def test_every_instance_config_frees_slots_of_ended_runs() -> None:
    for path in INSTANCE_FILES:
        monitoring = yaml.safe_load(path.read_text())["run_monitoring"]
        assert monitoring["enabled"] is True, path
        assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 600, path
    values = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    k8s = values["dagsterDaemon"]["runMonitoring"]
    assert k8s["enabled"] and k8s["freeSlotsAfterRunEndSeconds"] == _free_after(INSTANCE_FILES[0])


def _slots_iteration(instance: DagsterInstance, seconds_later: float, monkeypatch) -> None:
    """One pass of the daemon's slot-freeing loop, its clock `seconds_later` ahead."""
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_later)
    monkeypatch.setattr(slot_daemon, "get_current_datetime", lambda: now)
    # Stand-in for the daemon's workspace process context: the iteration only reads .instance.
    workspace = SimpleNamespace(instance=instance)
    list(slot_daemon.execute_concurrency_slots_iteration(workspace, logging.getLogger("test")))


def _claims(instance: DagsterInstance, run) -> bool:
    """The training step asks for its `gpu` slot as the executor does (a fresh claim context:
    a killed run worker never exits its context, so it never gives the slot back)."""
    context = InstanceConcurrencyContext(instance, run)
    return context.claim(POOL, "stage1_checkpoint")


def check_a_killed_runs_slot_comes_back(instance: DagsterInstance, free_after: int, monkeypatch):
    killed = create_run_for_test(instance, job_name="train", status=DagsterRunStatus.STARTED)
    waiting = create_run_for_test(instance, job_name="train", status=DagsterRunStatus.STARTED)
    assert _claims(instance, killed)
    assert instance.event_log_storage.get_concurrency_info(POOL).slot_count == 1  # default_limit
    instance.report_run_failed(killed)  # killed while training: the step never gave the slot back
    assert not _claims(instance, waiting)
    _slots_iteration(instance, free_after / 2, monkeypatch)  # too early: still held
    assert not _claims(instance, waiting)
    _slots_iteration(instance, free_after + 5, monkeypatch)
    assert _claims(instance, waiting)  # the slot came back


def test_a_killed_runs_slot_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_FILES[0], home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 120
        check_a_killed_runs_slot_comes_back(instance, _free_after(INSTANCE_FILES[0]), monkeypatch)


@pytest.mark.mysql
def test_a_killed_runs_slot_comes_back_on_the_compose_instance(
    dagster_home: Path,  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docker/dagster.yaml as shipped, its storage on the real MariaDB."""
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        check_a_killed_runs_slot_comes_back(instance, _free_after(INSTANCE_FILES[1]), monkeypatch)
