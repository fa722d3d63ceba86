"""Re-ingestion sensor ticks and the daily sweep schedule."""

import json
import os
import time

import dagster as dg
import pytest

from narrative_pipeline.resources import DatabaseResource, PathsResource
from narrative_pipeline.schedules import daily_ingestion_sweep
from narrative_pipeline.sensors import csv_folder_sensor, decide

OLD = 3600  # seconds: a file last touched an hour ago has settled


def _write(path, text, age_seconds=OLD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))


def _tick(csv_dir, cursor, instance=None):
    """One sensor evaluation; returns (run requests, skip reason, new cursor)."""
    context = dg.build_sensor_context(
        cursor=cursor,
        instance=instance or dg.DagsterInstance.ephemeral(),
        resources={
            "paths": PathsResource(csv_dir=str(csv_dir)),
            "database": DatabaseResource(url=f"sqlite:///{csv_dir / 'sensor.sqlite'}"),
        },
    )
    result = csv_folder_sensor.evaluate_tick(context)
    return result.run_requests or [], result.skip_message, result.cursor


def _settle(csv_dir, cursor):
    """Two ticks: a new file is taken only once seen unchanged on two consecutive ticks."""
    first, _, cursor = _tick(csv_dir, cursor)
    assert first == []
    return _tick(csv_dir, cursor)


def test_new_file_requests_one_run(tmp_path):
    _write(tmp_path / "AAPL.csv", "Assets,fy\n1::USD,2024\n")
    runs, _, cursor = _settle(tmp_path, None)
    assert len(runs) == 1
    assert runs[0].tags["narrative/triggering_files"] == "1"
    assert str(tmp_path / "AAPL.csv") in json.loads(cursor)["ingested"]


def test_unchanged_folder_requests_nothing(tmp_path):
    _write(tmp_path / "AAPL.csv", "a\n")
    runs, _, cursor = _settle(tmp_path, None)
    assert len(runs) == 1
    runs, skip, cursor = _tick(tmp_path, cursor)
    assert runs == [] and "no settled new or changed CSV" in skip
    runs, _, _ = _tick(tmp_path, cursor)
    assert runs == []


def test_changed_file_requests_a_new_run(tmp_path):
    _write(tmp_path / "sub" / "MSFT.csv", "a\n")
    first, _, cursor = _settle(tmp_path, None)
    _write(tmp_path / "sub" / "MSFT.csv", "a,b\n1,2\n", age_seconds=OLD - 10)
    second, _, cursor = _settle(tmp_path, cursor)
    assert len(first) == len(second) == 1
    assert first[0].run_key != second[0].run_key


def test_half_written_file_is_not_picked_up(tmp_path):
    partial = tmp_path / "GOOG.csv"
    _write(partial, "Assets,fy\n1::USD", age_seconds=0)  # being written right now
    runs, skip, cursor = _tick(tmp_path, None)
    assert runs == [] and "waiting for 1 file(s) to settle" in skip  # first tick: never taken
    runs, skip, cursor = _tick(tmp_path, cursor)
    assert runs == [] and "waiting for 1 file(s) to settle" in skip
    # The writer appends more: still not taken, even though an earlier tick saw the file.
    with partial.open("a") as handle:
        handle.write(",2024\n")
    runs, _, cursor = _tick(tmp_path, cursor)
    assert runs == []
    # Writer done and the file left alone: taken on the next two ticks.
    stamp = time.time() - OLD
    os.utime(partial, (stamp, stamp))
    runs, _, _ = _settle(tmp_path, cursor)
    assert len(runs) == 1


def test_temporary_names_are_ignored(tmp_path):
    _write(tmp_path / "KO.csv.tmp", "a\n")
    _write(tmp_path / ".hidden.csv", "a\n")
    runs, _, _ = _settle(tmp_path, None)
    assert runs == []


def test_missing_folder_skips(tmp_path):
    runs, skip, _ = _tick(tmp_path / "absent", None)
    assert runs == [] and skip


def test_decide_drops_deleted_files_and_survives_a_bad_cursor():
    now = time.time_ns()
    sig = (10, now - 10**12)
    settled = decide(
        json.dumps({"ingested": {}, "seen": {"/x.csv": list(sig)}}), {"/x.csv": sig}, now
    )
    assert list(settled.changed) == ["/x.csv"]
    after_delete = decide(settled.cursor, {}, now)
    assert json.loads(after_delete.cursor) == {"ingested": {}, "seen": {}}
    assert decide("not json", {"/x.csv": sig}, now).changed == {}


def test_daily_schedule_targets_the_whole_graph():
    from narrative_pipeline.definitions import ASSET_KEYS, defs

    assert daily_ingestion_sweep.cron_schedule == "0 3 * * *"
    assert daily_ingestion_sweep.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=None)
    requests = list(daily_ingestion_sweep.evaluate_tick(context).run_requests)
    assert len(requests) == 1
    job = defs.get_repository_def().get_job(daily_ingestion_sweep.job_name)
    assert sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys) == sorted(
        ASSET_KEYS
    )


def test_files_the_database_already_holds_request_nothing(tmp_path):
    """E.g. raw_records wrote the sample and loaded it in a run the sensor did not start."""
    csv = tmp_path / "AAPL.csv"
    _write(csv, "Assets,fy\n1::USD,2024\n")
    database = DatabaseResource(url=f"sqlite:///{tmp_path / 'sensor.sqlite'}")
    database.get_db().record_source_file(csv)
    runs, skip, cursor = _settle(tmp_path, None)
    assert runs == [] and "already loaded" in skip
    _write(csv, "Assets,fy\n2::USD,2024\n", age_seconds=OLD - 10)  # new content, same size
    runs, _, _ = _settle(tmp_path, cursor)
    assert len(runs) == 1


def test_the_tag_counts_the_files_that_triggered_the_run(tmp_path):
    for ticker in ("AAPL", "KO", "MSFT", "GOOG"):
        _write(tmp_path / f"{ticker}.csv", "Assets,fy\n1::USD,2024\n")
    DatabaseResource(url=f"sqlite:///{tmp_path / 'sensor.sqlite'}").get_db().record_source_file(
        tmp_path / "KO.csv"
    )
    runs, _, _ = _settle(tmp_path, None)
    assert len(runs) == 1
    assert runs[0].tags["narrative/triggering_files"] == "3"  # KO is loaded already
    assert "narrative/files" not in runs[0].tags


@pytest.mark.parametrize(
    "status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED], ids=str
)
def test_no_new_run_while_its_run_is_queued_or_running(tmp_path, status):
    """Five file events while its run is queued make no second run; the next tick after the
    run ends picks up everything that changed meanwhile, in one run."""
    from dagster._core.test_utils import create_run_for_test

    instance = dg.DagsterInstance.ephemeral()
    _write(tmp_path / "AAPL.csv", "Assets,fy\n1::USD,2024\n")
    runs, _, cursor = _tick(tmp_path, None, instance)
    runs, _, cursor = _tick(tmp_path, cursor, instance)
    assert len(runs) == 1
    # (A QUEUED run cannot be made without a code location origin; the filter lists it too.)
    running = create_run_for_test(
        instance, job_name="__ASSET_JOB", status=status, tags=runs[0].tags
    )
    for i in range(5):
        _write(tmp_path / f"T{i}.csv", "Assets,fy\n1::USD,2024\n")
    runs, skip, cursor = _tick(tmp_path, cursor, instance)
    assert runs == [] and "waiting for 5 file(s) to settle" in skip
    for _ in range(3):
        runs, skip, cursor = _tick(tmp_path, cursor, instance)
        assert runs == [] and "5 changed file(s) wait" in skip and "started" in skip
    assert sorted(json.loads(cursor)["ingested"]) == [str(tmp_path / "AAPL.csv")]
    instance.report_run_failed(running)  # the run ends (a kill would end it the same way)
    runs, _, cursor = _tick(tmp_path, cursor, instance)
    assert len(runs) == 1 and runs[0].tags["narrative/triggering_files"] == "5"
    assert len(json.loads(cursor)["ingested"]) == 6


def test_marker_mode_takes_a_file_only_with_its_marker(tmp_path, monkeypatch):
    """A writer that pauses mid-file: without its marker the file is never taken, however
    long it sits unchanged; with it, at once."""
    monkeypatch.setenv("NARRATIVE_LANDING_MARKER", ".done")
    csv = tmp_path / "GOOG.csv"
    _write(csv, "Assets,fy\n1::USD")  # paused writer: settled by size and age, but incomplete
    runs, skip, cursor = _settle(tmp_path, None)
    assert runs == [] and "no settled new or changed CSV" in skip
    _write(csv, "Assets,fy\n1::USD,2024\n")
    _write(tmp_path / "GOOG.csv.done", "", age_seconds=OLD - 1)
    runs, _, cursor = _tick(tmp_path, cursor)  # one tick: the marker says it is complete
    assert len(runs) == 1
    _write(csv, "Assets,fy\n2::USD,2024\n", age_seconds=0)  # rewritten after its marker
    runs, _, cursor = _tick(tmp_path, cursor)
    assert runs == []
    (tmp_path / "GOOG.csv.done").touch()
    runs, _, _ = _tick(tmp_path, cursor)
    assert len(runs) == 1


def test_marker_mode_folder_marker_and_raw_ingestion(tmp_path, monkeypatch):
    """`_SUCCESS` marks a whole folder; ingestion honours the marker too."""
    from narrative_pipeline.readers.landing import scan_landing

    monkeypatch.setenv("NARRATIVE_LANDING_MARKER", "_SUCCESS")
    _write(tmp_path / "a" / "AAPL.csv", "x\n")
    _write(tmp_path / "b" / "KO.csv", "x\n")
    _write(tmp_path / "a" / "_SUCCESS", "", age_seconds=0)
    scan = scan_landing(tmp_path, (".csv",))
    assert [p.name for p in scan.files] == ["AAPL.csv"]
    assert [(p.name, "waiting for its marker _SUCCESS" in r) for p, r in scan.skipped] == [
        ("KO.csv", True)
    ]
