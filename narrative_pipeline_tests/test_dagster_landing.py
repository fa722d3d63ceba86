"""companyfacts in the landing folder (NARRATIVE_CSV_DIR): the raw_records asset and the sensor
take `.json`, `.json.gz` and `companyfacts.zip` beside the CSVs (documents generated here)."""

import gzip
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from narrative_pipeline.assets import raw_records
from narrative_pipeline.readers.landing import is_landing_name, landing_files
from narrative_pipeline.sample_data import generate_sample_csvs
from narrative_pipeline_tests.test_dagster_assets import make_resources, metadata_of, open_db, run
from narrative_pipeline_tests.test_dagster_sensors import OLD, _settle, _tick, _write


def document(cik: int, assets: float) -> bytes:
    """A minimal companyfacts document: one Assets value and a dei value, two filings."""

    def fact(val, accn, fy, fp, form):
        return {
            "val": val,
            "accn": accn,
            "end": f"{fy}-12-31",
            "fy": fy,
            "fp": fp,
            "form": form,
            "filed": f"{fy + 1}-02-01",
        }

    body = {
        "cik": cik,
        "entityName": f"Company {cik}",
        "facts": {
            "us-gaap": {
                "Assets": {
                    "label": "Assets",
                    "units": {
                        "USD": [
                            fact(assets, f"{cik:010d}-24-000001", 2023, "FY", "10-K"),
                            fact(assets * 2, f"{cik:010d}-25-000001", 2024, "FY", "10-K"),
                        ]
                    },
                }
            },
            "dei": {
                "EntityPublicFloat": {
                    "units": {"USD": [fact(7.0, f"{cik:010d}-25-000001", 2024, "FY", "10-K")]}
                }
            },
        },
    }
    return json.dumps(body).encode()


def write_companyfacts(folder: Path) -> dict[str, Path]:
    """AAPL.json, sub/MSFT.json.gz and a two-member companyfacts.zip (plus a non-JSON member)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    paths = {
        "json": folder / "AAPL.json",
        "gz": folder / "sub" / "MSFT.json.gz",
        "zip": folder / "companyfacts.zip",
    }
    paths["json"].write_bytes(document(320193, 100.0))
    paths["gz"].write_bytes(gzip.compress(document(789019, 200.0)))
    with zipfile.ZipFile(paths["zip"], "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("CIK0000000001.json", document(1, 10.0))
        archive.writestr("CIK0000000002.json", document(2, 20.0))
        archive.writestr("README.txt", "not a document")
    return paths


def age(path: Path) -> None:
    """Make `path` look settled to the sensor (last written an hour ago)."""
    stamp = time.time() - OLD
    os.utime(path, (stamp, stamp))


def test_landing_names() -> None:
    for name in ("AAPL.csv", "AAPL.json", "AAPL.JSON.GZ", "companyfacts.zip"):
        assert is_landing_name(name), name
    for name in (".AAPL.json", "companyfacts.zip.part", "AAPL.csv.tmp", "notes.txt", "x.gz"):
        assert not is_landing_name(name), name


def test_a_companyfacts_only_folder_is_ingested_and_not_given_a_sample(tmp_path: Path) -> None:
    resources = make_resources(tmp_path)
    write_companyfacts(tmp_path / "csv")
    meta = metadata_of(run([raw_records], resources), raw_records)
    assert meta["sample_generated"] is False
    assert (meta["csv_files"], meta["companyfacts_files"]) == (0, 3)
    assert meta["files_loaded"] == 3 and meta["failed_files"] == 0
    assert meta["failed_files_table"].count("\n") == 2  # no row
    assert meta["tickers"] == ["AAPL", "CIK0000000001", "CIK0000000002", "MSFT"]
    assert landing_files(tmp_path / "csv").csv == []  # nothing was generated
    db = open_db(resources)
    facts = db.facts_frame()
    assert len(facts) == 4 * 3  # per company: two Assets values and one dei value
    msft = facts[(facts["ticker"] == "MSFT") & (facts["concept"] == "Assets")]
    assert sorted(msft["value"]) == [200.0, 400.0]
    assert db.source_file_unchanged(tmp_path / "csv" / "companyfacts.zip")
    # A second run reads nothing again.
    again = metadata_of(run([raw_records], resources), raw_records)
    assert (again["files_loaded"], again["files_unchanged"]) == (0, 3)


def test_csvs_and_companyfacts_together(tmp_path: Path) -> None:
    resources = make_resources(tmp_path)
    generate_sample_csvs(tmp_path / "csv", tickers=["KO"], filings_per_ticker=3)
    (tmp_path / "csv" / "AAPL.json").write_bytes(document(320193, 100.0))
    meta = metadata_of(run([raw_records], resources), raw_records)
    assert meta["sample_generated"] is False
    assert (meta["csv_files"], meta["companyfacts_files"], meta["files_loaded"]) == (1, 1, 2)
    assert meta["files_seen"] == 2
    assert meta["tickers"] == ["AAPL", "KO"]
    frame = open_db(resources).facts_frame(filing_columns=("period_end",))
    assert frame.loc[frame["ticker"] == "KO", "period_end"].notna().all()  # current-layout CSV
    assert frame.loc[frame["ticker"] == "AAPL", "period_end"].isna().all()


def test_a_bad_companyfacts_file_is_reported_as_failed(tmp_path: Path) -> None:
    resources = make_resources(tmp_path)
    write_companyfacts(tmp_path / "csv")
    (tmp_path / "csv" / "BAD.json").write_text("{not json")
    meta = metadata_of(run([raw_records], resources), raw_records)
    assert meta["files_loaded"] == 3
    assert meta["failed_files"] == 1
    table = meta["failed_files_table"]
    assert "BAD.json" in table and "not valid JSON" in table
    assert "BAD" not in meta["tickers"]


@pytest.mark.parametrize("kind", ["json", "gz", "zip"])
def test_sensor_requests_a_run_for_a_settled_companyfacts_file(tmp_path: Path, kind: str) -> None:
    paths = write_companyfacts(tmp_path / "staging")
    target = tmp_path / "landing" / paths[kind].name
    target.parent.mkdir()
    target.write_bytes(paths[kind].read_bytes())
    _write(target.with_name("notes.txt"), "ignored")
    _write(target.with_name(target.name + ".part"), "half a copy")
    age(target)
    runs, _, cursor = _settle(tmp_path / "landing", None)
    assert len(runs) == 1 and runs[0].tags["narrative/triggering_files"] == "1"
    assert list(json.loads(cursor)["ingested"]) == [str(target)]
    runs, skip, _ = _tick(tmp_path / "landing", cursor)
    assert runs == [] and "no settled new or changed CSV or companyfacts file" in skip


def test_sensor_skips_a_zip_the_database_already_holds(tmp_path: Path) -> None:
    resources = make_resources(tmp_path)
    landing = tmp_path / "csv"
    for path in write_companyfacts(landing).values():
        age(path)
    assert run([raw_records], resources).success
    # The sensor's own test database lives in the landing folder: point it at the same one.
    (landing / "sensor.sqlite").symlink_to(tmp_path / "facts.sqlite")
    runs, skip, _ = _settle(landing, None)
    assert runs == [] and "3 changed file(s) already loaded" in skip


def test_landing_files_sorts_kinds_reports_skipped_entries_and_honours_the_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_companyfacts(tmp_path / "staging")
    landing = tmp_path / "landing"
    landing.mkdir()
    csv_file = landing / "ACME.csv"
    _write(csv_file, "accn,Assets\nA1,1::USD\n")
    json_file = landing / paths["json"].name
    json_file.write_bytes(paths["json"].read_bytes())
    _write(landing / ".hidden.json", "{}")
    (landing / "folder.zip").mkdir()
    found = landing_files(landing)
    assert (found.csv, found.companyfacts) == ([csv_file], [json_file])
    assert sorted(p.name for p, _ in found.skipped) == [".hidden.json", "folder.zip"]
    assert any("a folder named like a file" in m for m in found.messages())
    monkeypatch.setenv("NARRATIVE_LANDING_MARKER", ".done")
    waiting = landing_files(landing)
    assert len(waiting) == 0
    assert any("waiting for its marker" in m for m in waiting.messages())
    json_file.with_name(json_file.name + ".done").write_text("")  # newer than the file
    assert landing_files(landing).companyfacts == [json_file]
    assert landing_files(landing, marker="").csv == [csv_file]  # marker mode off


def test_sensor_marker_mode_takes_a_marked_companyfacts_file_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NARRATIVE_LANDING_MARKER", "_SUCCESS")
    paths = write_companyfacts(tmp_path / "staging")
    landing = tmp_path / "landing"
    landing.mkdir()
    target = landing / paths["zip"].name
    target.write_bytes(paths["zip"].read_bytes())
    runs, _, cursor = _tick(landing, None)
    assert runs == []  # no marker yet: not taken, however long it waits
    (landing / "_SUCCESS").write_text("")
    runs, _, _ = _tick(landing, cursor)  # no settling in marker mode
    assert len(runs) == 1 and runs[0].tags["narrative/triggering_files"] == "1"
