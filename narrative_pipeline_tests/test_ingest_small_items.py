"""The smaller items of issue 12: no secret in metadata or on a command line, a one-line hint
for a missing MySQL database, landing-folder entries that are not regular files skipped with a
message, links out of the folder not followed, the CLI's exit code on failed files."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.db.schema import DatabaseUnavailable
from narrative_pipeline.readers.landing import scan_landing
from narrative_pipeline.resources import DatabaseResource
from narrative_pipeline.us_gaap import ingest

REPO_ROOT = Path(__file__).resolve().parents[1]
CSV = "Assets,fy,fp,form,filed,accn\n1::USD,2024,FY,10-K,2024-01-01,A1\n"


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("mysql+pymysql://u:s3cret@db:3306/gaap", "s3cret"),
        ("mysql+pymysql://u@db/gaap?password=s3cret&charset=utf8mb4", "s3cret"),
        ("mysql+pymysql://db/gaap?user=u&passwd=s3cret", "s3cret"),
        ("mysql+pymysql://u:p%40ss@db/gaap?ssl_key=/k/secret.pem", "p@ss"),
    ],
)
def test_describe_masks_every_password(url: str, secret: str) -> None:
    shown = DatabaseResource(url=url).describe()
    assert secret not in shown and "p%40ss" not in shown
    assert "***" in shown and "db" in shown
    if "charset" in url:
        assert "charset=utf8mb4" in shown  # the rest of the URL stays readable


def test_compose_healthcheck_keeps_the_password_off_command_lines() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker" / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test", [])
        command = " ".join(test[1:]) if test else ""
        words = shlex.split(command.replace("$$", "$"))
        # A password may only reach a program through its environment (VAR=... before it).
        for word in words:
            if "PASSWORD" in word:
                assert "=" in word and word.split("=", 1)[0].isupper(), (name, word)
        assert not any(w.startswith("-p") and len(w) > 2 for w in words), (name, words)


@pytest.mark.mysql
def test_compose_mysql_healthcheck_runs_against_a_real_server(mysql_url: str) -> None:
    """The healthcheck's shell line, run as the container would (its variables from the
    environment), says healthy for a running server and unhealthy for none."""
    if shutil.which("mysqladmin") is None:
        pytest.skip("mysqladmin not installed (scripts/services.sh install)")
    compose = yaml.safe_load((REPO_ROOT / "docker" / "docker-compose.yml").read_text())
    line = compose["services"]["mysql"]["healthcheck"]["test"][1].replace("$$", "$")
    url = make_url(mysql_url)
    env = {**os.environ, "MYSQL_USER": url.username, "MYSQL_PASSWORD": url.password}
    up = subprocess.run(["sh", "-c", f"{line} -P {url.port}"], env=env, timeout=30)
    assert up.returncode == 0
    down = subprocess.run(["sh", "-c", f"{line} -P 1"], env=env, timeout=30, capture_output=True)
    assert down.returncode != 0


@pytest.mark.mysql
def test_a_missing_mysql_database_is_a_one_line_hint(mysql_url: str) -> None:
    url = make_url(mysql_url).set(database=f"absent_{uuid.uuid4().hex[:8]}")
    with pytest.raises(DatabaseUnavailable) as caught:
        DbUsGaap(url.render_as_string(hide_password=False))
    message = str(caught.value)
    assert "does not exist" in message and "CREATE DATABASE" in message
    assert "\n" not in message and url.password not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_landing_entries_that_are_not_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "EVIL.csv").write_text(CSV)
    root.mkdir()
    (root / "AAPL.csv").write_text(CSV)
    (root / ".csv").write_text(CSV)
    (root / "X.csv").mkdir()
    (root / "X.csv" / "INNER.csv").write_text(CSV)  # a folder named X.csv is still searched
    os.mkfifo(root / "PIPE.csv")
    (root / "GONE.csv").symlink_to(tmp_path / "nowhere.csv")
    (root / "EVIL.csv").symlink_to(outside / "EVIL.csv")
    (root / "LINKED.csv").symlink_to(root / "AAPL.csv")  # inside the folder: followed
    (root / "out").symlink_to(outside, target_is_directory=True)  # a folder link: not walked
    scan = scan_landing(root, (".csv",))
    assert [p.relative_to(root).as_posix() for p in scan.files] == [
        "AAPL.csv",
        "LINKED.csv",
        "X.csv/INNER.csv",
    ]
    reasons = {p.name: r for p, r in scan.skipped}
    assert "starts with '.'" in reasons[".csv"]
    assert "folder" in reasons["X.csv"]
    assert "FIFO" in reasons["PIPE.csv"]
    assert "dangling link" in reasons["GONE.csv"]
    assert "out of the landing folder" in reasons["EVIL.csv"]


def test_ingestion_reports_skipped_entries_and_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    root.mkdir()
    (root / "AAPL.csv").write_text(CSV)
    os.mkfifo(root / "PIPE.csv")
    db = DbUsGaap(f"sqlite:///{tmp_path / 'db.sqlite'}")
    report = ingest.load_csv_files(root, db, workers=1)
    assert report.files_loaded == 1
    assert any("PIPE.csv" in m and "FIFO" in m for m in report.messages)


def test_cli_exits_non_zero_when_a_file_failed(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    root.mkdir()
    (root / "AAPL.csv").write_text(CSV)
    (root / "TORN.csv").write_text(CSV.rstrip("\n"))
    command = [
        sys.executable,
        "-m",
        "narrative_pipeline.cli",
        "ingest",
        str(root),
        "--db",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--files-only",
        "--no-progress",
        "--store",
        str(tmp_path / "store.bin"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "FAILED" in done.stdout and "TORN.csv" in done.stdout and "torn line" in done.stdout
    (root / "TORN.csv").write_text(CSV)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
