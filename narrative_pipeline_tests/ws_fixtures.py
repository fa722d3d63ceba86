"""Reusable pytest fixtures: a real `narrative-pipeline store serve` subprocess on loopback.

Register the fixture in a test module (or a conftest) to use it; assigning it (rather than
importing the name) keeps ruff's F811 quiet when tests take it as a parameter::

    from narrative_pipeline_tests import ws_fixtures

    store_server = ws_fixtures.store_server

    def test_something(store_server):
        client = DataStoreWsClient(store_server.host, store_server.port)

`start_store_server(path)` is the plain function behind it, for module-scoped servers or restarts.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_LISTENING = re.compile(r"listening on ws://([^:/]+):(\d+)/ws")
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServerProcess:
    """A running server subprocess and where to reach it."""

    path: Path
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the server finishes the current call and closes the store), then SIGKILL."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode

    def restart(self, same_port: bool = True) -> ServerProcess:
        """Stop and start again over the same file (and port, unless told otherwise)."""
        self.stop()
        fresh = start_store_server(
            self.path, port=self.port if same_port else 0, extra_args=self.extra_args
        )
        self.__dict__.update(fresh.__dict__)
        return self


def start_store_server(
    path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_args: list[str] | None = None,
    startup_timeout: float = 120.0,
    full_cli: bool = True,
) -> ServerProcess:
    """Start the server on PATH and wait for the address it prints.

    By default runs `python -m narrative_pipeline.cli store serve PATH --port 0` (what users run);
    `full_cli=False` runs `python -m narrative_pipeline.store.serve PATH`, the same command
    without the top-level CLI.
    """
    path = Path(path)
    log_path = path.with_name(path.name + f".server-{time.monotonic_ns()}.log")
    entry = (
        ["narrative_pipeline.cli", "store", "serve"]
        if full_cli
        else ["narrative_pipeline.store.serve"]
    )
    command = [sys.executable, "-m", *entry, str(path), "--host", host, "--port", str(port)]
    command += extra_args or []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, env=env, cwd=REPO_ROOT
        )
    found = _wait_for_address(process, startup_timeout)
    if found is None:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"store server did not start: {' '.join(command)}\n{log_path.read_text(errors='replace')[-3000:]}"
        )
    return ServerProcess(path, found[0], found[1], process, log_path, list(extra_args or []))


def _wait_for_address(process: subprocess.Popen, timeout: float) -> tuple[str, int] | None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                return None
            seen += chunk
            match = _LISTENING.search(seen.decode(errors="replace"))
            if match:
                return match.group(1), int(match.group(2))
    finally:
        selector.close()
    return None


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh store file served on a free loopback port for one test; stopped afterwards."""
    server = start_store_server(tmp_path / "store.bin")
    try:
        yield server
    finally:
        server.stop()
