"""The generated sample must look like real sec-fetcher output and be reproducible."""

import csv
import re

import pytest

from narrative_pipeline.sample_data import (
    CONCEPTS,
    FILING_COLUMNS,
    csv_files_in,
    ensure_sample_csvs,
    generate_sample_csvs,
)

CELL = re.compile(r"^-?\d+(\.\d+)?(e-?\d+)?::[A-Za-z/]+$")


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_matches_sec_fetcher(tmp_path):
    paths = generate_sample_csvs(tmp_path, tickers=["AAPL", "KO"], filings_per_ticker=5)
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
    assert "NVDA.csv" in capsys.readouterr().out
