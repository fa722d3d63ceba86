"""The deployment's process layout, for real: the pipeline's code served by `dagster api grpc` (as
the `code-location` service runs it) and reached by `dagster-webserver` through a workspace file
made from docker/workspace.yaml. The Compose health checks of both services are run too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from narrative_pipeline.definitions import ASSET_KEYS

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"
BIN = Path(sys.executable).parent
PIPELINE_ASSETS = set(ASSET_KEYS)  # the chain itself is pinned in test_dagster_definitions.py
LOCATIONS_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            name
            repositories { name assetNodes { assetKey { path } } }
          }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}: {read_log(process)}")
        if ready():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not ready after {timeout} s: {read_log(process)}")


def read_log(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text()[-3000:]


def start(args: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    log = log_path.open("w")
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path  # type: ignore[attr-defined]
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def compose_service(name: str) -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"][name]


def healthcheck(name: str, port: int, container_port: int) -> list[str]:
    """The service's Compose health check command, aimed at our port instead of the container's."""
    test = compose_service(name)["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [part.replace(str(container_port), str(port)) for part in test[1:]]


def run_healthcheck(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    program = command[0] if command[0] != "python" else sys.executable
    resolved = program if os.path.isabs(program) else str(BIN / program)
    return subprocess.run(
        [resolved, *command[1:]], env=env, capture_output=True, text=True, timeout=60
    )


def grpc_is_serving(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        return DagsterGrpcClient(port=port, host="127.0.0.1").health_check_query() == "SERVING"
    except Exception:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NARRATIVE_DATA_DIR": str(tmp_path / "data"),
        "NARRATIVE_CSV_DIR": str(tmp_path / "landing"),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def code_location(env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """`dagster api grpc` with the code-location service's own arguments, on a free port."""
    port = free_port()
    command = compose_service("code-location")["command"]
    args = [str(BIN / command[0]), *command[1:]]
    args[args.index("-h") + 1] = "127.0.0.1"
    args[args.index("-p") + 1] = str(port)
    process = start(args, env, tmp_path, tmp_path / "grpc.log")
    try:
        wait_until(lambda: grpc_is_serving(port), process, "dagster api grpc", timeout=240)
        yield port
    finally:
        stop(process)


@pytest.fixture
def webserver(code_location: int, env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """`dagster-webserver` reading a copy of docker/workspace.yaml aimed at the test's gRPC port."""
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    server.update(host="127.0.0.1", port=code_location)
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump(workspace))
    port = free_port()
    args = [
        str(BIN / "dagster-webserver"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(workspace_file),
    ]
    process = start(args, env, tmp_path, tmp_path / "webserver.log")
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/server_info"),
            process,
            "webserver",
            timeout=180,
        )
        yield port
    finally:
        stop(process)


def test_webserver_loads_the_code_location_served_over_grpc(
    webserver: int, code_location: int, env: dict[str, str]
) -> None:
    data = graphql(webserver, LOCATIONS_QUERY)["workspaceOrError"]
    assert data["__typename"] == "Workspace", data
    (entry,) = data["locationEntries"]
    assert entry["name"] == "narrative_pipeline"
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    assert entry["loadStatus"] == "LOADED"
    keys = {
        "/".join(node["assetKey"]["path"])
        for repository in location["repositories"]
        for node in repository["assetNodes"]
    }
    assert keys >= PIPELINE_ASSETS

    # The Compose health checks of both services pass against the running processes.
    for name, port, container_port in (
        ("code-location", code_location, 4000),
        ("webserver", webserver, 3000),
    ):
        done = run_healthcheck(healthcheck(name, port, container_port), env)
        assert done.returncode == 0, f"{name} health check failed: {done.stderr[-2000:]}"


def test_grpc_health_check_fails_when_nothing_serves(env: dict[str, str]) -> None:
    """The code-location health check really probes: on a closed port it reports failure."""
    done = run_healthcheck(healthcheck("code-location", free_port(), 4000), env)
    assert done.returncode != 0
