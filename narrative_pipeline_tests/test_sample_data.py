"""The generated sample must look like real sec-fetcher output and be reproducible."""

import csv
import re

import pytest

from narrative_pipeline.readers import read_sec_fetcher_csv
from narrative_pipeline.sample_data import (
    CONCEPTS,
    FILING_COLUMNS,
    csv_files_in,
    ensure_sample_csvs,
    generate_sample_csvs,
)
from narrative_pipeline_tests.test_readers_csv_layouts import CURRENT

CELL = re.compile(r"^-?\d+(\.\d+)?(e-?\d+)?::[A-Za-z/]+$")


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_older_layout_matches_sec_fetcher(tmp_path):
    paths = generate_sample_csvs(
        tmp_path, tickers=["AAPL", "KO"], filings_per_ticker=5, layout="older"
    )
    assert [p.name for p in paths] == ["AAPL.csv", "KO.csv"]
    header = next(csv.reader(paths[0].open()))
    assert header[-5:] == FILING_COLUMNS
    assert "AccountsPayableCurrent" in header and "Assets" in header
    rows = _rows(paths[0])
    assert len(rows) == 5
    assert len({row["accn"] for row in rows}) == 5
    assert all(re.match(r"^\d{10}-\d{2}-\d{6}$", row["accn"]) for row in rows)
    assert {row["form"] for row in rows} <= {"10-Q", "10-K"}
    cells = [v for row in rows for k, v in row.items() if k not in FILING_COLUMNS and v]
    assert len(cells) > 5 * 30
    assert all(CELL.match(v) for v in cells), [v for v in cells if not CELL.match(v)][:5]
    units = {v.split("::")[1] for v in cells}
    assert {"USD", "shares", "USD/shares", "pure"} <= units


def test_current_layout_is_the_default_and_reads_cleanly(tmp_path):
    paths = generate_sample_csvs(tmp_path, tickers=["AAPL", "KO"], filings_per_ticker=6)
    header = next(csv.reader(paths[0].open()))
    assert header[: len(CURRENT)] == CURRENT  # the reference's order (the tests' own copy)
    assert header[len(CURRENT) :] == [c.name for c in CONCEPTS]
    for path in paths:
        rows = _rows(path)
        assert [r["canonical_order"] for r in rows] == [str(i) for i in range(6)]
        periods = [(int(r["fy"]), {"Q1": 1, "Q2": 2, "Q3": 3, "FY": 4}[r["fp"]]) for r in rows]
        assert periods == sorted(periods, reverse=True)  # newest first, one row per period
        assert len(set(periods)) == 6
        assert [r["is_amendment"] for r in rows].count("true") == 1
        assert {r["form"] for r in rows} <= {"10-Q", "10-K"}  # no /A suffix
        for row in rows:
            assert row["period_end"][:4] == row["fy"]
            assert row["filing_url"].endswith(f"{row['accn']}-index.htm")
            assert row["filed"] > row["period_end"]
        result = read_sec_fetcher_csv(path, {c.name for c in CONCEPTS})
        # Every column in the taxonomy given and clean metadata: not a single message.
        assert result.error is None and result.messages == []
        assert result.filings["is_amendment"].sum() == 1
        assert result.filings["period_end"].notna().all()


def test_unknown_layout_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        generate_sample_csvs(tmp_path, layout="newest")


def test_deterministic_for_a_seed(tmp_path):
    first = generate_sample_csvs(tmp_path / "a", seed=7)
    second = generate_sample_csvs(tmp_path / "b", seed=7)
    other = generate_sample_csvs(tmp_path / "c", seed=8)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert [p.read_bytes() for p in first] != [p.read_bytes() for p in other]


def test_ensure_only_fills_an_empty_folder(tmp_path):
    folder = tmp_path / "landing"
    assert len(ensure_sample_csvs(folder, tickers=["MSFT"])) == 1
    before = (folder / "MSFT.csv").read_bytes()
    assert ensure_sample_csvs(folder) == []  # never overwrites
    assert (folder / "MSFT.csv").read_bytes() == before
    assert csv_files_in(folder) == [folder / "MSFT.csv"]


@pytest.mark.parametrize("name", ["AAPL.json", "sub/MSFT.json.gz", "companyfacts.zip"])
def test_a_folder_of_companyfacts_only_is_not_empty(tmp_path, name):
    folder = tmp_path / "landing"
    (folder / name).parent.mkdir(parents=True)
    (folder / name).write_bytes(b"{}")
    (folder / ".hidden.csv").write_text("x")  # neither counts nor is overwritten
    assert ensure_sample_csvs(folder) == []
    assert csv_files_in(folder) == []


def test_temporary_files_do_not_make_a_folder_non_empty(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "AAPL.json.part").write_bytes(b"{")
    assert len(ensure_sample_csvs(folder, tickers=["KO"])) == 1


def test_rejects_unknown_ticker(tmp_path):
    with pytest.raises(ValueError, match="ZZZZ"):
        generate_sample_csvs(tmp_path, tickers=["ZZZZ"])


def test_concept_names_are_camel_case_us_gaap_names():
    assert len({c.name for c in CONCEPTS}) == len(CONCEPTS)
    assert all(re.match(r"^[A-Z][A-Za-z]+$", c.name) for c in CONCEPTS)


def test_cli_writes_files(tmp_path, capsys):
    from narrative_pipeline.cli import main

    assert main(["sample", "--out", str(tmp_path), "--tickers", "NVDA", "--filings", "2"]) == 0
    assert len(_rows(tmp_path / "NVDA.csv")) == 2
    assert "canonical_order" in _rows(tmp_path / "NVDA.csv")[0]
    assert "NVDA.csv" in capsys.readouterr().out
    older = tmp_path / "older"
    assert main(["sample", "--out", str(older), "--tickers", "KO", "--layout", "older"]) == 0
    assert next(csv.reader((older / "KO.csv").open()))[-5:] == FILING_COLUMNS
