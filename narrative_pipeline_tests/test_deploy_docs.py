"""docs/DEPLOYMENT.md keeps up with the code: every environment variable that the package, the
instance file, Compose or the Kubernetes manifests read is in its configuration tables, and the
files it links to exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "DEPLOYMENT.md"

# How the package reads variables: os.environ.get("X"), os.environ["X"], os.getenv("X"),
# EnvVar("X"), resources' _setting(value, "X"), and constants such as MODEL_ENV = "X".
CODE_PATTERNS = [
    r"os\.environ\.get\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
    r"os\.environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]",
    r"os\.environ\.setdefault\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
    r"getenv\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
    r"EnvVar\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
    r"_setting\([^,()]+,\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
    r"\b[A-Z_]*ENV[A-Z_]*\s*=\s*[\"']([A-Z][A-Z0-9_]+)[\"']",
]


def variables_read_by_the_package() -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / "narrative_pipeline").rglob("*.py"):
        text = path.read_text()
        for pattern in CODE_PATTERNS:
            found.update(re.findall(pattern, text))
    return found


def variables_read_by_deploy_files() -> set[str]:
    found = set(
        re.findall(r"env:\s*([A-Z][A-Z0-9_]+)", (REPO_ROOT / "docker" / "dagster.yaml").read_text())
    )
    compose = (REPO_ROOT / "docker" / "docker-compose.yml").read_text()
    found.update(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", compose))
    for service in yaml.safe_load(compose)["services"].values():
        found.update((service.get("environment") or {}).keys())
    for doc in yaml.safe_load_all(
        (REPO_ROOT / "deploy" / "k8s" / "pipeline-config.yaml").read_text()
    ):
        if doc and doc["kind"] == "ConfigMap":
            found.update(doc["data"])
    return found


def documented() -> set[str]:
    """Variables named in this document or in README's Configuration table (the pipeline's)."""
    readme = (REPO_ROOT / "README.md").read_text()
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", DOC.read_text() + readme))


def test_package_reads_the_variables_the_architecture_names() -> None:
    """Guards the scanner itself: if these vanish, the patterns above went stale."""
    assert {"NARRATIVE_DATA_DIR", "SIMD_R_DRIVE_SERVER_HOST", "NARRATIVE_EMBEDDING_MODEL"} <= (
        variables_read_by_the_package()
    )


def test_every_variable_read_anywhere_is_documented() -> None:
    missing = (variables_read_by_the_package() | variables_read_by_deploy_files()) - documented()
    assert not missing, (
        f"add to README's Configuration table (package) or docs/DEPLOYMENT.md (deployment): {sorted(missing)}"
    )


def test_linked_files_exist() -> None:
    links = re.findall(r"\]\((\.\./[^)#]+)\)", DOC.read_text())
    assert links
    for link in links:
        assert (DOC.parent / link).resolve().exists(), link
