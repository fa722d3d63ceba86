"""docker/: the Compose file, the images and the instance files fit together.

No Docker engine runs on CI, and the machines have the docker CLI without its compose plugin, so
the file is checked at the YAML level with Compose's own variable interpolation rules, plus
`docker compose config` where a compose implementation is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
SERVICES = {"mysql", "store", "code-location", "webserver", "daemon"}
DAGSTER_SERVICES = {"code-location", "webserver", "daemon"}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


class MissingVariable(Exception):
    """A `${NAME:?message}` variable was not set: Compose refuses to start."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's substitution rules (the subset we use), applied to the raw file text."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return arg if (value is None if op == "-" else unset_or_empty) else value
        if op in (":?", "?"):
            if value is None if op == "?" else unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The Compose model as `docker compose` sees it with the documented .env values."""
    return load_compose(read_env_file(ENV_EXAMPLE))


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {k: "" if v is None else str(v) for k, v in environment.items()}


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (named volume or host path)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def env_vars_read_by(instance_yaml: Path) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)

    walk(yaml.safe_load(instance_yaml.read_text()))
    return found


def test_services_all_present_with_health_checks(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check.get("retries", 0) >= 3, name


def test_start_order_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def healthy_deps(name: str) -> set[str]:
        deps = services[name].get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions"
        return {d for d, spec in deps.items() if spec.get("condition") == "service_healthy"}

    assert healthy_deps("code-location") == {"mysql", "store"}
    assert healthy_deps("webserver") >= {"mysql", "code-location"}
    assert healthy_deps("daemon") >= {"mysql", "code-location"}
    assert not services["mysql"].get("depends_on") and not services["store"].get("depends_on")


def test_dagster_processes_get_every_variable_the_instance_reads(compose: dict[str, Any]) -> None:
    wanted = env_vars_read_by(DOCKER / "dagster.yaml")
    assert {"DAGSTER_MYSQL_PASSWORD", "DAGSTER_MYSQL_HOST", "DAGSTER_STORAGE_DIR"} <= wanted
    for name in DAGSTER_SERVICES:
        env = env_of(compose["services"][name])
        missing = wanted - {k for k, v in env.items() if v}
        assert not missing, f"{name} lacks {missing}"
        assert env["DAGSTER_MYSQL_HOST"] == "mysql"
        assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
        # The compute logs written by runs in the code location must be readable by the webserver.
        assert mounts_of(compose["services"][name])[env["DAGSTER_STORAGE_DIR"]] == "dagster-storage"


def test_instance_storage_is_mysql_with_env_credentials() -> None:
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    mysql_db = instance["storage"]["mysql"]["mysql_db"]
    assert set(mysql_db) == {"hostname", "port", "username", "password", "db_name"}
    assert all(set(v) == {"env"} for v in mysql_db.values()), "credentials must come from env"


def test_code_location_matches_workspace_and_reaches_store_and_db(compose: dict[str, Any]) -> None:
    services = compose["services"]
    location = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"][0][
        "grpc_server"
    ]
    command = services["code-location"]["command"]
    assert command[:3] == ["dagster", "api", "grpc"]
    assert command[command.index("-p") + 1] == str(location["port"])
    assert command[command.index("-m") + 1] == "narrative_pipeline.definitions"
    assert location["host"] == "code-location"

    env = env_of(services["code-location"])
    store_cmd = services["store"]["command"]
    assert env["SIMD_R_DRIVE_SERVER_HOST"] == "store"
    assert env["SIMD_R_DRIVE_SERVER_PORT"] == store_cmd[store_cmd.index("--port") + 1]
    assert env["MYSQL_HOST"] == "mysql" and env["MYSQL_PASSWORD"]
    assert env["MYSQL_DATABASE"] != env["DAGSTER_MYSQL_DB"], "pipeline data and Dagster share a DB"
    for name in ("webserver", "daemon"):
        assert "-w" in services[name]["command"]


def test_data_lives_on_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    assert mounts_of(services["mysql"])["/var/lib/mysql"] in declared
    store_mounts = mounts_of(services["store"])
    store_file = services["store"]["command"][2]
    assert store_mounts["/store"] in declared and store_file.startswith("/store/")
    code_env, code_mounts = env_of(services["code-location"]), mounts_of(services["code-location"])
    assert code_mounts[code_env["NARRATIVE_DATA_DIR"]] in declared
    assert code_env["NARRATIVE_CSV_DIR"] in code_mounts, "the CSV landing folder is not mounted"
    used = {src for s in services.values() for src in mounts_of(s).values()}
    assert declared <= used, f"declared but unused volumes: {declared - used}"


def test_passwords_come_from_env_file_never_literals() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())  # before interpolation
    anchors = [v for k, v in raw.items() if k.startswith("x-") and isinstance(v, dict)]
    environments = [env_of(s) for s in raw["services"].values()] + anchors
    secrets = [(k, v) for env in environments for k, v in env.items() if "PASSWORD" in k]
    assert len(secrets) >= 4
    for key, value in secrets:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (
            f"{key}={value!r} is not required from .env"
        )
    # Without an .env file Compose stops with a message instead of using a well-known password.
    with pytest.raises(MissingVariable, match="PASSWORD"):
        load_compose({})


def test_real_env_file_is_never_committed() -> None:
    ignored = [line.strip() for line in (REPO_ROOT / ".gitignore").read_text().splitlines()]
    assert "/docker/.env" in ignored or "docker/.env" in ignored


def test_env_example_documents_exactly_the_variables_compose_reads() -> None:
    referenced = {
        m.group("name")
        for path in DOCKER.glob("docker-compose*.yml")  # the opt-in override files too
        for m in INTERPOLATION.finditer(path.read_text())
        if m.group("name")
    }
    documented = set(read_env_file(ENV_EXAMPLE))
    assert referenced == documented


def test_store_port_is_not_published_unless_opted_in_and_then_on_loopback_only(
    compose: dict[str, Any],
) -> None:
    # The store protocol has no authentication (docs/SECURITY.md): reachable inside the
    # compose network only, unless docker-compose.store-port.yml is added.
    assert "ports" not in compose["services"]["store"]
    override = yaml.safe_load(
        interpolate(
            (DOCKER / "docker-compose.store-port.yml").read_text(), read_env_file(ENV_EXAMPLE)
        )
    )
    ports = override["services"]["store"]["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.store"])
def test_no_credentials_baked_into_images(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    for line in text.splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|_URL=.*@", line, re.I), line
    assert not re.search(r"PASSWORD\s*=\s*\S", text), "a password value is set in the image"


def test_cpu_image_uses_cpu_torch_wheel_and_store_image_has_no_torch() -> None:
    main = (DOCKER / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in main
    assert re.search(
        r'pip install "torch==\$\{TORCH_VERSION\}" --index-url "\$\{TORCH_INDEX_URL\}"', main
    )
    # torch goes in before the project so the project's torch requirement is already satisfied.
    assert main.index("torch==${TORCH_VERSION}") < main.index('pip install ".[deploy]"')
    assert "ARG TORCH_VERSION=2.13.0" in main
    store = (DOCKER / "Dockerfile.store").read_text()
    assert "torch" not in store.split("FROM", 1)[1].lower()
    assert "--no-deps" in store


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.store"])
def test_dockerignore_lets_through_every_copied_path(dockerfile: str) -> None:
    allowed = {
        line[1:]
        for line in (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", (DOCKER / dockerfile).read_text(), re.M)
    sources = [src for line in copies for src in line.split()]
    assert sources
    for src in sources:
        assert (REPO_ROOT / src).exists(), f"COPY source {src} missing"
        assert src in allowed or f"{src}/**" in allowed, f"{src} is excluded by .dockerignore"


def test_mysql_init_script_creates_pipeline_database(tmp_path: Path) -> None:
    """Runs the init script with a recording `mysql` in place of the server's client."""
    fake = tmp_path / "mysql"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/sql\n')
    fake.chmod(0o755)
    script = DOCKER / "mysql-init" / "01-narrative-database.sh"
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "MYSQL_ROOT_PASSWORD": "root-pw",
        "MYSQL_USER": "narrative",
        "NARRATIVE_MYSQL_DB": "narrative_data",
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sql = (tmp_path / "sql").read_text()
    assert "CREATE DATABASE IF NOT EXISTS `narrative_data`" in sql
    assert "GRANT ALL PRIVILEGES ON `narrative_data`.* TO 'narrative'@'%'" in sql
    assert "-proot-pw" in (tmp_path / "args").read_text()

    env.pop("NARRATIVE_MYSQL_DB")
    failed = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "NARRATIVE_MYSQL_DB is not set" in failed.stderr


def _compose_command() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no compose implementation installed (docker CLI lacks the compose plugin)")
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
