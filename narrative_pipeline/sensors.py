"""Re-ingestion sensor: request a pipeline run when files land in (or change in) the landing folder.

Landing files are sec-fetcher CSVs and SEC companyfacts (`.json`, `.json.gz`, `companyfacts.zip`):
readers/landing.py, which the raw_records asset uses too.

The cursor is JSON with two maps of path -> [size, mtime_ns]:
- `ingested`: the files already handed to a run;
- `seen`: what the previous tick observed (to tell a settled file from one still being written).

A new or changed file triggers a run only when it is *settled*: its size and mtime are identical
on two consecutive ticks AND its mtime is at least `settle_seconds` old. On its first tick a new
file is therefore always "waiting to settle". This is a heuristic: a writer that pauses longer
than a tick and the settle time can have its file taken half-way (the reader then reports a torn
last line and keeps the stored data, and the finished file is loaded on a later tick). The safe
ways are write-then-rename (temporary names `*.tmp`, `*.part`, dot-files are never taken) or
marker mode (NARRATIVE_LANDING_MARKER, readers/landing.py: a file is taken only once its
`.done`/`_SUCCESS` marker exists, and raw_records honours the marker too).

One run at a time: while a run this sensor requested is queued or running, no new run is
requested and the changed files stay out of `ingested`, so the next tick after that run picks
up whatever changed meanwhile (five file events make one or two runs, not five).
The decision uses file sizes and mtimes, never the time of the last tick, so a paused daemon
misses nothing when it resumes. A deleted file is dropped from the cursor and triggers nothing.
Settled files the database already holds unchanged (`source_file` bookkeeping: loaded by a run
started elsewhere) trigger nothing. Entries that are not regular files are skipped
(readers/landing.py).
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

from narrative_pipeline.readers.landing import (
    LANDING_SUFFIXES,
    TEMPORARY_SUFFIXES,
    landing_marker,
    scan_landing,
)
from narrative_pipeline.resources import DatabaseResource, PathsResource

SETTLE_SECONDS = 10.0
TICK_SECONDS = 30
IGNORED_SUFFIXES = TEMPORARY_SUFFIXES
WATCHED_SUFFIXES = LANDING_SUFFIXES  # CSVs and companyfacts (.json, .json.gz, .zip)
TRIGGER_TAG = "narrative/trigger"
# Runs of this sensor not finished yet (queued included): no second one is requested meanwhile.
UNFINISHED_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)

Signature = tuple[int, int]  # (size in bytes, mtime in ns)


def scan_csv_folder(csv_dir: str | Path, marker: str | None = None) -> dict[str, Signature]:
    """Every landing file (CSV or companyfacts) under `csv_dir` (recursive) that may be taken,
    with its size and mtime; empty if the folder is absent. In marker mode only files whose
    marker is there (readers/landing.py)."""
    root = Path(csv_dir)
    if not root.is_dir():
        return {}
    found: dict[str, Signature] = {}
    for path in scan_landing(root, WATCHED_SUFFIXES, marker).files:
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed between listing and stat
            continue
        found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


@dataclass
class FolderDecision:
    """What one tick decided: settled changes to ingest, files still being written, next cursor."""

    changed: dict[str, Signature] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    cursor: str = ""
    held_cursor: str = ""  # the next cursor when no run is requested now (changes kept)

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
    two_ticks: bool = True,
) -> FolderDecision:
    """Compare the folder with the cursor: which files are new/changed and settled, which pending.

    `two_ticks=False` (marker mode: the marker says the file is complete) takes a file at once.
    """
    ingested, seen = parse_cursor(cursor)
    settle_ns = int(settle_seconds * 1e9)
    decision = FolderDecision()
    for path, signature in sorted(current.items()):
        if ingested.get(path) == signature:
            continue
        stable = seen.get(path) == signature or not two_ticks
        old_enough = now_ns - signature[1] >= settle_ns
        if stable and old_enough:
            decision.changed[path] = signature
        else:
            decision.pending.append(path)
    kept = {p: s for p, s in ingested.items() if p in current}
    decision.held_cursor = _cursor_json(kept, current)
    decision.cursor = _cursor_json({**kept, **decision.changed}, current)
    return decision


def _cursor_json(ingested: dict[str, Signature], seen: dict[str, Signature]) -> str:
    return json.dumps(
        {
            "ingested": {p: list(s) for p, s in sorted(ingested.items())},
            "seen": {p: list(s) for p, s in sorted(seen.items())},
        }
    )


def unfinished_run(instance: Any) -> Any:
    """A run this sensor requested that is still queued or running, or None."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            tags={TRIGGER_TAG: "csv_folder_sensor"}, statuses=list(UNFINISHED_STATUSES)
        ),
        limit=1,
    )
    return runs[0] if runs else None


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


def _waiting(decision: FolderDecision, marker: str | None, settle: float) -> str:
    """Why the pending files are not taken yet, in words true on every tick."""
    n = len(decision.pending)
    if marker:
        return f"; {n} file(s) waiting for their {marker} marker"
    return (
        f"; waiting for {n} file(s) to settle (same size and mtime on two ticks, mtime older "
        f"than {settle:g}s)"
    )


@dg.sensor(
    name="csv_folder_sensor",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches NARRATIVE_CSV_DIR; requests a run of the whole graph when CSV or companyfacts "
        "(.json, .json.gz, companyfacts.zip) files are added or changed and have settled (same "
        "size and mtime on two ticks, mtime older than "
        f"{SETTLE_SECONDS:g}s; or their NARRATIVE_LANDING_MARKER exists). One run at a time: "
        "changes made while its run is queued or running wait for the next tick. Ingestion is "
        "incremental: unchanged files are skipped."
    ),
)
def csv_folder_sensor(
    context: dg.SensorEvaluationContext, paths: PathsResource, database: DatabaseResource
):
    """Turn settled new/changed landing files into one run request (cursor: path -> size, mtime)."""
    marker = landing_marker()
    settle = _settle_seconds()
    current = scan_csv_folder(paths.csv_path, marker)
    decision = decide(
        context.cursor, current, time.time_ns(), 0.0 if marker else settle, two_ticks=not marker
    )
    if decision.changed:
        running = unfinished_run(context.instance)
        if running is not None:
            context.update_cursor(decision.held_cursor)  # taken by the next tick after it
            return dg.SkipReason(
                f"{len(decision.changed)} changed file(s) wait: run {running.run_id[:8]} this "
                f"sensor requested is {running.status.value.lower()}"
            )
    context.update_cursor(decision.cursor)
    loaded = already_loaded(database, decision.changed, context.log)
    if loaded and len(loaded) == len(decision.changed):
        return dg.SkipReason(f"{len(loaded)} changed file(s) already loaded by an earlier run")
    if not decision.changed:
        reason = f"no settled new or changed CSV or companyfacts file in {paths.csv_path}"
        if decision.pending:
            reason += _waiting(decision, marker, settle)
        return dg.SkipReason(reason)
    triggering = [p for p in decision.changed if p not in loaded]
    context.log.info("%d new/changed landing file(s): %s", len(triggering), ", ".join(triggering))
    return dg.RunRequest(
        run_key=decision.run_key(),
        tags={
            TRIGGER_TAG: "csv_folder_sensor",
            # The files that triggered the run; the run itself loads every new or changed file
            # in the folder (ingestion is incremental), which may be more by the time it runs.
            "narrative/triggering_files": str(len(triggering)),
        },
    )
