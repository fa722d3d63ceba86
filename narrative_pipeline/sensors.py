"""Re-ingestion sensor: request a pipeline run when files land in (or change in) the landing folder.

Landing files are sec-fetcher CSVs and SEC companyfacts (`.json`, `.json.gz`, `companyfacts.zip`):
readers/landing.py, which the raw_records asset uses too.

The cursor is JSON with two maps of path -> [size, mtime_ns]:
- `ingested`: the files already handed to a run;
- `seen`: what the previous tick observed (to tell a settled file from one still being written).

A new or changed file triggers a run only when it is *settled*: its size and mtime are identical
on two consecutive ticks AND its mtime is at least `settle_seconds` old. A file being copied or
written changes size/mtime between ticks, so it is never picked up half-way; it is picked up on
the first tick after the writer stops. Temporary names (`*.tmp`, `*.part`, dot-files) are ignored,
so writers that write-then-rename are seen only once complete. The decision uses file sizes and
mtimes, never the time of the last tick, so a paused daemon misses nothing when it resumes.
A deleted file is dropped from the cursor and triggers nothing. Settled files the database already
holds unchanged (`source_file` bookkeeping: loaded by a run started elsewhere) trigger nothing.
"""

# No `from __future__ import annotations`: Dagster reads the Config/resource annotations at runtime.

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from narrative_pipeline.readers.landing import TEMPORARY_SUFFIXES, is_landing_name
from narrative_pipeline.resources import DatabaseResource, PathsResource

SETTLE_SECONDS = 10.0
TICK_SECONDS = 30
IGNORED_SUFFIXES = TEMPORARY_SUFFIXES

Signature = tuple[int, int]  # (size in bytes, mtime in ns)


def scan_csv_folder(csv_dir: str | Path) -> dict[str, Signature]:
    """Every landing file (CSV or companyfacts) under `csv_dir` (recursive) with its size and
    mtime; empty if the folder is absent."""
    root = Path(csv_dir)
    if not root.is_dir():
        return {}
    found: dict[str, Signature] = {}
    for path in root.rglob("*"):
        if not is_landing_name(path.name):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed between listing and stat
            continue
        if path.is_file():
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


@dataclass
class FolderDecision:
    """What one tick decided: settled changes to ingest, files still being written, next cursor."""

    changed: dict[str, Signature] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    cursor: str = ""

    def run_key(self) -> str:
        """Stable id of this set of changes, so a re-evaluated tick never launches it twice."""
        payload = json.dumps(sorted((p, list(s)) for p, s in self.changed.items()))
        return "csv-" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def parse_cursor(cursor: str | None) -> tuple[dict[str, Signature], dict[str, Signature]]:
    """(ingested, seen) from the cursor JSON; a missing or unreadable cursor means 'nothing yet'."""
    if not cursor:
        return {}, {}
    try:
        data = json.loads(cursor)
        ingested = {p: (int(s[0]), int(s[1])) for p, s in data.get("ingested", {}).items()}
        seen = {p: (int(s[0]), int(s[1])) for p, s in data.get("seen", {}).items()}
    except (ValueError, TypeError, AttributeError, IndexError):
        return {}, {}
    return ingested, seen


def decide(
    cursor: str | None,
    current: dict[str, Signature],
    now_ns: int,
    settle_seconds: float = SETTLE_SECONDS,
) -> FolderDecision:
    """Compare the folder with the cursor: which files are new/changed and settled, which pending."""
    ingested, seen = parse_cursor(cursor)
    settle_ns = int(settle_seconds * 1e9)
    decision = FolderDecision()
    for path, signature in sorted(current.items()):
        if ingested.get(path) == signature:
            continue
        stable = seen.get(path) == signature
        old_enough = now_ns - signature[1] >= settle_ns
        if stable and old_enough:
            decision.changed[path] = signature
        else:
            decision.pending.append(path)
    next_ingested = {p: s for p, s in ingested.items() if p in current}
    next_ingested.update(decision.changed)
    decision.cursor = json.dumps(
        {
            "ingested": {p: list(s) for p, s in sorted(next_ingested.items())},
            "seen": {p: list(s) for p, s in sorted(current.items())},
        }
    )
    return decision


def already_loaded(database: DatabaseResource, changed: dict, log: Any) -> set[str]:
    """Files the database already holds at this size/mtime (loaded by a run the sensor did not
    request, e.g. "Materialize all" or raw_records writing the sample): no run needed for them."""
    if not changed:
        return set()
    try:
        db = database.get_db()
        unchanged = getattr(db, "source_file_unchanged", None)
        if unchanged is None:
            return set()
        return {path for path in changed if unchanged(Path(path))}
    except Exception as exc:  # noqa: BLE001 - an unreachable database must not stop the sensor
        log.warning("could not ask the database which files it holds (%s); requesting a run", exc)
        return set()


def _settle_seconds() -> float:
    raw = os.environ.get("NARRATIVE_SENSOR_SETTLE_SECONDS")
    return float(raw) if raw else SETTLE_SECONDS


@dg.sensor(
    name="csv_folder_sensor",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches NARRATIVE_CSV_DIR; requests a run of the whole graph when CSV or companyfacts "
        "(.json, .json.gz, companyfacts.zip) files are added or changed and have settled (same size and mtime on two ticks, mtime older than "
        f"{SETTLE_SECONDS:g}s). Ingestion is incremental: unchanged files are skipped."
    ),
)
def csv_folder_sensor(
    context: dg.SensorEvaluationContext, paths: PathsResource, database: DatabaseResource
):
    """Turn settled new/changed CSV files into one run request (cursor: path -> size, mtime)."""
    current = scan_csv_folder(paths.csv_path)
    decision = decide(context.cursor, current, time.time_ns(), _settle_seconds())
    context.update_cursor(decision.cursor)
    loaded = already_loaded(database, decision.changed, context.log)
    if loaded and len(loaded) == len(decision.changed):
        return dg.SkipReason(f"{len(loaded)} changed file(s) already loaded by an earlier run")
    if not decision.changed:
        reason = f"no settled new or changed CSV or companyfacts file in {paths.csv_path}"
        if decision.pending:
            reason += f"; waiting for {len(decision.pending)} file(s) still changing"
        return dg.SkipReason(reason)
    context.log.info(
        "%d new/changed landing file(s): %s", len(decision.changed), ", ".join(decision.changed)
    )
    return dg.RunRequest(
        run_key=decision.run_key(),
        tags={
            "narrative/trigger": "csv_folder_sensor",
            "narrative/files": str(len(decision.changed)),
        },
    )
