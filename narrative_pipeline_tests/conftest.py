"""Shared fixtures: real data beside the project, and the services `make test` starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NARRATIVE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real SEC files in ../shared/data; users do not have them, so tests skip without."""
    if not (SHARED_DATA / "sec-fetcher-csvs").is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA} (only in the development workplace)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """SQLAlchemy URL of the MariaDB server started by scripts/services.sh (make test)."""
    url = os.environ.get("NARRATIVE_TEST_MYSQL_URL")
    if not url:
        pytest.skip("NARRATIVE_TEST_MYSQL_URL unset: run through `make test`, which starts MariaDB")
    return url


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Headless Chromium installed by scripts/services.sh."""
    path = os.environ.get("NARRATIVE_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.skip("chromium not installed: run through `make test`, which installs it")
    return path
