"""The Compose deployment's Dagster instance (docker/dagster.yaml) against a real MySQL server.

The instance file is used exactly as shipped: only the environment variables it reads are set,
pointing at the MariaDB that scripts/services.sh starts, in a database made for this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    asset,
    materialize,
)

pytest.importorskip("dagster_mysql", reason="dagster-mysql comes with the `deploy` extra")

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTANCE_YAML = REPO_ROOT / "docker" / "dagster.yaml"

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


@pytest.fixture
def dagster_home(mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DAGSTER_HOME holding docker/dagster.yaml, its env vars aimed at a fresh database."""
    url = sa.engine.make_url(mysql_url)
    db_name = f"dagster_deploy_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(url.set(database=None))
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db_name}` CHARACTER SET utf8mb4"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    for name, value in {
        "DAGSTER_MYSQL_HOST": url.host,
        "DAGSTER_MYSQL_PORT": str(url.port or 3306),
        "DAGSTER_MYSQL_USER": url.username,
        "DAGSTER_MYSQL_PASSWORD": url.password,
        "DAGSTER_MYSQL_DB": db_name,
        "DAGSTER_STORAGE_DIR": str(tmp_path / "storage"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    try:
        yield home
    finally:
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db_name}`"))
        server.dispose()


@asset
def landing_count() -> int:
    """Stands in for a pipeline step: small, deterministic, no external data."""
    return 3


@asset
def doubled(landing_count: int) -> int:
    return landing_count * 2


def _table_count(db_url: str, table: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT COUNT(*) FROM `{table}`")).scalar_one()
    finally:
        engine.dispose()


def test_instance_from_deploy_yaml_uses_mysql_for_every_storage(dagster_home: Path) -> None:
    from dagster_mysql import MySQLEventLogStorage, MySQLRunStorage, MySQLScheduleStorage

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert isinstance(instance.run_storage, MySQLRunStorage)
        assert isinstance(instance.event_log_storage, MySQLEventLogStorage)
        assert isinstance(instance.schedule_storage, MySQLScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
        # One training per GPU: the `gpu` pool of stage1_checkpoint gets a limit of 1.
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        # Compute logs and artifacts go to the volume the compose services share.
        storage_dir = Path(instance.storage_directory())
        assert storage_dir.is_relative_to(Path(dagster_home).parent / "storage")


def test_runs_and_event_logs_are_stored_in_mysql_and_read_back(
    dagster_home: Path, mysql_url: str
) -> None:
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        result = materialize([landing_count, doubled], instance=instance)
        assert result.success
        assert result.output_for_node("doubled") == 6
        run_id = result.run_id

    # A new instance (as after a container restart) reads everything back from MySQL.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert [r.run_id for r in instance.get_runs()] == [run_id]

        events = instance.all_logs(run_id)
        kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
        assert DagsterEventType.RUN_SUCCESS in kinds
        assert DagsterEventType.ASSET_MATERIALIZATION in kinds

        records = instance.fetch_materializations(AssetKey("doubled"), limit=10).records
        assert [r.run_id for r in records] == [run_id]
        assert set(instance.all_asset_keys()) == {AssetKey("landing_count"), AssetKey("doubled")}

    # And the rows really are in the MySQL database the environment named.
    db_url = sa.engine.make_url(mysql_url).set(database=os.environ["DAGSTER_MYSQL_DB"])
    assert _table_count(db_url, "runs") == 1
    assert _table_count(db_url, "event_logs") == len(events)


def liveness_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The daemon service's Compose health check, run against the MySQL-backed instance."""
    daemon_bin = str(Path(sys.executable).parent / "dagster-daemon")
    return subprocess.run(
        [daemon_bin, "liveness-check"], env=env, capture_output=True, text=True, timeout=120
    )


def test_daemon_heartbeats_through_mysql_and_health_check_sees_them(
    dagster_home: Path, tmp_path: Path
) -> None:
    env = dict(os.environ)
    down = liveness_check(env)
    assert down.returncode == 1 and "not running" in down.stdout

    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from: []\n")
    daemon_bin = str(Path(sys.executable).parent / "dagster-daemon")
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [daemon_bin, "run", "-w", str(workspace)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while (up := liveness_check(env)).returncode != 0:
            assert daemon.poll() is None, f"daemon exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no heartbeat: {up.stdout} {log.read_text()[-3000:]}"
            )
            time.sleep(2)
        assert "Daemon live" in up.stdout
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
