"""End to end through the real UI stack: dagster-webserver + dagster-daemon + headless Chromium.

Launches "Materialize all" through GraphQL with the very mutation the UI sends (the implicit
`__ASSET_JOB` with every asset and check selected), waits for the run to succeed, then screenshots
the asset graph page in headless Chromium and checks the page shows every asset.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from narrative_pipeline.definitions import ASSET_KEYS
from narrative_pipeline.sample_data import generate_sample_csvs

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 300  # about 150 s on a busy 2-core machine: one process per step

# The UI's "Materialize all" (LaunchAssetExecutionButton) sends this mutation.
LAUNCH_MUTATION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
  }
}
"""

ASSET_NODES_QUERY = """
query {
  assetNodes {
    assetKey { path }
    groupName
    repository { name location { name } }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""

LOCATION_ERRORS_QUERY = """
query {
  workspaceOrError {
    ... on Workspace {
      locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""

RUN_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 5) { status skipReason } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def _wait_for_webserver(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"webserver exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"webserver not up after 90 s:\n{log.read_text()[-3000:]}")


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    # Own process group, so stopping it also stops the code server and run workers it spawned.
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _environment(tmp_path: Path) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NARRATIVE_", "SIMD_R_DRIVE_", "MYSQL_", "DAGSTER_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        NARRATIVE_DATA_DIR=str(tmp_path / "data"),
        NARRATIVE_CSV_DIR=str(tmp_path / "csv"),
        # Fresh sample files are never "settled" within the test, so the sensor ticks (and says
        # why it skips) without queueing a second run behind ours.
        NARRATIVE_SENSOR_SETTLE_SECONDS="3600",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def _wait_for_asset_nodes(port: int, log: Path) -> list[dict]:
    """The code location loads in the background after the server answers: wait for it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        nodes = _graphql(port, ASSET_NODES_QUERY)["assetNodes"]
        if nodes:
            return nodes
        errors = _graphql(port, LOCATION_ERRORS_QUERY)["workspaceOrError"]["locationEntries"]
        failed = [e for e in errors if (e["locationOrLoadError"] or {}).get("message")]
        assert not failed, f"code location failed to load: {failed}"
        time.sleep(1)
    pytest.fail(f"no asset nodes after 120 s:\n{log.read_text()[-3000:]}")


def _launch_materialize_all(port: int, log: Path) -> str:
    nodes = _wait_for_asset_nodes(port, log)
    assert sorted("/".join(n["assetKey"]["path"]) for n in nodes) == sorted(ASSET_KEYS)
    repository = nodes[0]["repository"]
    checks = [
        {"assetKey": {"path": n["assetKey"]["path"]}, "name": check["name"]}
        for n in nodes
        for check in (n["assetChecksOrError"] or {}).get("checks", [])
    ]
    assert len(checks) == 9  # 5 store checks + 4 model checks on stage1_evaluation
    params = {
        "selector": {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": n["assetKey"]["path"]} for n in nodes],
            "assetCheckSelection": checks,
        },
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "test", "value": "ui_e2e"}]},
        # The launchpad's run config: one epoch keeps the test short.
        "runConfigData": {
            "ops": {"stage1_checkpoint": {"config": {"max_epochs": 1, "batch_size": 256}}}
        },
    }
    result = _graphql(port, LAUNCH_MUTATION, {"executionParams": params})
    launched = result["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def _wait_for_run(port: int, run_id: str, logs: list[Path]) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = "?"
    while time.monotonic() < deadline:
        status = _graphql(port, RUN_QUERY, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in logs)
    assert status == "SUCCESS", f"run {run_id} ended {status}\n{tails}"
    return status


def _wait_for_sensor_tick(port: int, repository: dict) -> list[dict]:
    """The daemon evaluates the (default-on) CSV sensor: wait for its first finished tick.

    A tick the daemon is still evaluating is recorded as STARTED; it says nothing yet, so it is
    left out (CI once read one in flight beside a finished SKIPPED tick).
    """
    selector = {
        "repositoryName": repository["name"],
        "repositoryLocationName": repository["location"]["name"],
        "sensorName": "csv_folder_sensor",
    }
    deadline = time.monotonic() + 90
    while True:
        sensor = _graphql(port, SENSOR_QUERY, {"selector": selector})["sensorOrError"]
        assert sensor["sensorState"]["status"] == "RUNNING"
        ticks = [t for t in sensor["sensorState"]["ticks"] if t["status"] != "STARTED"]
        if ticks or time.monotonic() > deadline:
            assert ticks, "the daemon finished no sensor tick in 90 s"
            return ticks
        time.sleep(2)


def _chromium(chromium: str, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1600,1000",
            "--virtual-time-budget=20000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _png_is_not_blank(path: Path) -> bool:
    """A rendered page compresses far worse than a single-colour one (no image library needed)."""
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    return len(set(pixels[: 1600 * 4 * 200])) > 8


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(600)
def test_materialize_all_through_the_ui_then_screenshot(tmp_path, chromium_path):
    env = _environment(tmp_path)
    generate_sample_csvs(tmp_path / "csv", tickers=["AAPL", "KO"], filings_per_ticker=4)
    port = _free_port()
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    workspace = str(REPO_ROOT / "workspace.yaml")
    web = _start(
        [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        env,
        web_log,
    )
    daemon = None
    try:
        # The daemon starts once the webserver has created the instance's SQLite storage: two
        # processes creating it at once leave two alembic heads behind.
        _wait_for_webserver(port, web, web_log)
        daemon = _start([str(BIN / "dagster-daemon"), "run", "-w", workspace], env, daemon_log)
        run_id = _launch_materialize_all(port, web_log)
        _wait_for_run(port, run_id, [web_log, daemon_log])

        nodes = _graphql(port, ASSET_NODES_QUERY)["assetNodes"]
        repository = nodes[0]["repository"]
        ticks = _wait_for_sensor_tick(port, repository)
        # Fresh files are not settled yet: the sensor skipped, saying why, and queued no run.
        assert all(t["status"] == "SKIPPED" for t in ticks), ticks
        assert any("to settle" in (t["skipReason"] or "") for t in ticks), ticks

        screenshot = tmp_path / "asset_graph.png"
        # The group page lays out its assets and links the other groups' ones by name; the global
        # lineage page folds groups away, so it would not show the names.
        location = repository["location"]["name"]
        url = f"http://127.0.0.1:{port}/locations/{location}/asset-groups/preprocessing"
        shot = _chromium(chromium_path, url, f"--screenshot={screenshot}")
        assert screenshot.is_file(), shot.stderr[-2000:]
        assert _png_is_not_blank(screenshot)
        dom = _chromium(chromium_path, url, "--dump-dom").stdout
        # The group page shows the group and its direct neighbours: stage1_evaluation (after
        # stage1_checkpoint) is two hops away from the preprocessing group.
        shown = [key for key in ASSET_KEYS if key != "stage1_evaluation"]
        missing = [key for key in shown if key not in dom]
        assert not missing, f"asset graph page lacks {missing}; DOM starts {dom[:1500]}"
    finally:
        keep = os.environ.get("NARRATIVE_E2E_ARTIFACTS")  # screenshot and logs, to look at
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for artifact in (tmp_path / "asset_graph.png", web_log, daemon_log):
                if artifact.is_file():
                    shutil.copy(artifact, Path(keep) / artifact.name)
        if daemon is not None:
            _stop(daemon)
        _stop(web)
