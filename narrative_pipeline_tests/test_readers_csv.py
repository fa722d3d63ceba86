"""sec-fetcher CSV reader: real files against an independent csv-module oracle, and bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from narrative_pipeline.readers import iter_csv_files, read_sec_fetcher_csv

FILING = {"fy", "fp", "form", "filed", "accn"}


def oracle(path: Path, taxonomy: set[str] | None = None) -> dict[tuple[str, str, str], float]:
    """Expected facts, computed cell by cell with the csv module (independent of the reader)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    facts = {}
    for row in body:
        accn = row[header.index("accn")]
        for name, cell in zip(header, row, strict=True):
            if name in FILING or not cell or (taxonomy is not None and name not in taxonomy):
                continue
            value, _, unit = cell.partition("::")
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number) and unit:
                facts[(accn, name, unit.upper())] = number
    return facts


def as_dict(result) -> dict[tuple[str, str, str], float]:
    f = result.facts
    return {
        (a, c, u): v
        for a, c, u, v in zip(
            f["accn"].astype(str),
            f["concept"].astype(str),
            f["unit"].astype(str),
            f["value"],
            strict=True,
        )
    }


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_real_files_match_oracle(shared_data: Path) -> None:
    paths = iter_csv_files(shared_data / "sec-fetcher-csvs")
    assert [p.stem for p in paths] == ["AAPL", "AMZN", "GOOG", "MSFT"]
    for path in paths:
        result = read_sec_fetcher_csv(path, None)
        expected = oracle(path)
        assert result.error is None
        assert result.ticker == path.stem
        assert not result.taxonomy_applied
        assert any("no taxonomy" in m for m in result.messages)
        assert len(result.facts) == len(expected) > 1000
        assert as_dict(result) == expected
        assert result.facts["value"].dtype == "float64"
        units = set(result.facts["unit"].astype(str))
        assert {"USD", "USD/SHARES"} <= units and all(u == u.upper() for u in units)
        assert len(result.filings) == 10
        assert result.filings["accn"].is_unique
        assert str(result.filings["fy"].dtype) == "Int64"


def test_real_file_with_taxonomy_filter(shared_data: Path) -> None:
    path = shared_data / "sec-fetcher-csvs" / "AAPL.csv"
    full = read_sec_fetcher_csv(path, None)
    concepts = set(full.facts["concept"].astype(str))
    keep = set(sorted(concepts)[: len(concepts) // 2])
    result = read_sec_fetcher_csv(path, keep)
    assert result.taxonomy_applied
    assert set(result.facts["concept"].astype(str)) == keep
    assert as_dict(result) == oracle(path, keep)
    header = path.read_text().splitlines()[0].split(",")
    assert sorted(result.skipped_columns) == sorted(
        h for h in header if h not in FILING and h not in keep
    )


def test_bad_cells_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "BAD.csv",
        "Assets,Liabilities,EPS,fy,fp,form,filed,accn\n"
        "12::,abc::USD,0.5::usd/shares,2024,FY,10-K,2024-01-01,A1\n"
        "1e400::USD,NaN::usd,-3::USD/Shares,2023,FY,10-K,2023-01-01,A2\n"
        "7::USD,8,1.5e3::shares,2022,FY,10-K,2022-01-01,A3\n",
    )
    r = read_sec_fetcher_csv(path, None)
    assert r.error is None
    assert as_dict(r) == {
        ("A1", "EPS", "USD/SHARES"): 0.5,
        ("A2", "EPS", "USD/SHARES"): -3.0,
        ("A3", "Assets", "USD"): 7.0,
        ("A3", "EPS", "SHARES"): 1500.0,
    }
    # 12:: (no unit), abc and NaN (non-numeric), 1e400 (inf), 8 (no ::UNIT)
    assert r.skipped_cells == 5
    assert r.non_numeric_units == {"USD": 2}
    text = " | ".join(r.messages)
    for needle in ("'12::'", "'abc::USD'", "'1e400::USD'", "without '::UNIT'"):
        assert needle in text


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "BOM.csv", b"\xef\xbb\xbfAssets,accn\r\n5::USD,A1\r\n")
    r = read_sec_fetcher_csv(path, {"Assets"})
    assert as_dict(r) == {("A1", "Assets", "USD"): 5.0}
    assert r.skipped_columns == []


def test_duplicated_column_uses_first_copy(tmp_path: Path) -> None:
    path = write(tmp_path, "DUP.csv", "Assets,Assets,accn,accn\n1::USD,2::USD,A1,B1\n")
    r = read_sec_fetcher_csv(path, None)
    assert as_dict(r) == {("A1", "Assets", "USD"): 1.0}
    assert sum("duplicated" in m for m in r.messages) == 2


def test_missing_form_loads_with_null(tmp_path: Path) -> None:
    path = write(tmp_path, "NOFORM.csv", "Assets,fy,fp,filed,accn\n1::USD,2024,FY,2024-02-01,A1\n")
    r = read_sec_fetcher_csv(path, None)
    assert r.error is None
    assert len(r.facts) == 1
    assert r.filings["form"].isna().all()
    assert r.filings["fy"].tolist() == [2024]
    assert any("no 'form' column" in m for m in r.messages)


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("NOACCN.csv", "Assets,fy\n1::USD,2024\n", "no 'accn' column"),
        ("EMPTY.csv", "", "empty file"),
        ("BLANK.csv", "\n\n  \n", "empty file"),
        ("LATIN1.csv", b"Assets,accn\n1::USD,\xe9\xe9\n", "not UTF-8"),
    ],
)
def test_unusable_files_report_error(tmp_path: Path, name: str, content, error: str) -> None:
    r = read_sec_fetcher_csv(write(tmp_path, name, content), None)
    assert r.error is not None and error in r.error
    assert r.facts.empty and r.filings.empty
    assert r.error in r.messages


def test_header_only_is_held_back(tmp_path: Path) -> None:
    """No usable filing: an error, so the ticker's stored data is kept (issue 12)."""
    r = read_sec_fetcher_csv(write(tmp_path, "HDR.csv", "Assets,form,fy,fp,filed,accn\n"), None)
    assert r.error is not None and "no usable filing (header only)" in r.error
    assert r.facts.empty and r.filings.empty


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("Assets,accn\n1::USD,A1,x\n2::USD\n", "rows with a field count"),
        ("Assets,accn\n1::USD,\n2::USD,\n", "rows without an accn"),
        ("Assets,accn\nabc::USD,A1\n", "filings without any numeric fact"),
        ('Assets,accn\n"1::USD,A1\n2::USD,A2\n', "unbalanced double quote"),
        ("Assets,accn\n1::USD,A1\n2::USD,A2", "torn line"),
    ],
)
def test_files_without_usable_filing_are_errors(tmp_path: Path, content: str, needle: str) -> None:
    r = read_sec_fetcher_csv(write(tmp_path, "X.csv", content), None)
    assert r.error is not None and needle in r.error, r.error
    assert r.facts.empty and r.filings.empty


def test_line_over_the_cap_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NARRATIVE_MAX_LINE_KB", "1")
    path = write(tmp_path, "LONG.csv", "Assets,accn\n" + "1::USD" + " " * 2000 + ",A1\n")
    r = read_sec_fetcher_csv(path, None)
    assert r.error is not None and "line 2" in r.error and "NARRATIVE_MAX_LINE_KB" in r.error
    monkeypatch.setenv("NARRATIVE_MAX_DOCUMENT_MB", "0.001")
    r = read_sec_fetcher_csv(path, None)
    assert r.error is not None and "NARRATIVE_MAX_DOCUMENT_MB" in r.error and str(path) in r.error


def test_rows_with_wrong_field_count_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path, "ROWS.csv", "Assets,accn\n1::USD,A1\n2::USD,A2,extra\n3::USD\n4::USD,A4\n"
    )
    r = read_sec_fetcher_csv(path, None)
    assert as_dict(r) == {("A1", "Assets", "USD"): 1.0, ("A4", "Assets", "USD"): 4.0}
    assert any("line 3" in m and "line 4" in m for m in r.messages)


def test_quoted_csv_goes_through_full_parser(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "QUOTED.csv",
        '"Assets","Note",fy,accn\n"1::USD","2,5::USD",2024,"A1"\n"2::USD",,x,A2\n',
    )
    r = read_sec_fetcher_csv(path, None)
    assert as_dict(r) == {("A1", "Assets", "USD"): 1.0, ("A2", "Assets", "USD"): 2.0}
    assert r.non_numeric_units == {"USD": 1}
    assert r.filings["fy"].tolist()[0] == 2024 and r.filings["fy"].isna().tolist()[1]


def test_repeated_accn_last_row_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "REP.csv", "Assets,Liabilities,accn\n1::USD,5::USD,A1\n2::USD,,A1\n")
    r = read_sec_fetcher_csv(path, None)
    assert as_dict(r) == {("A1", "Assets", "USD"): 2.0, ("A1", "Liabilities", "USD"): 5.0}
    assert r.duplicate_facts == 1 and len(r.filings) == 1


def test_iter_csv_files_recurses_and_sorts(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    for rel in ("b/c/ZZ.csv", "AA.csv", "b/MM.CSV", "b/notes.txt"):
        (tmp_path / rel).write_text("accn\n")
    assert [p.name for p in iter_csv_files(tmp_path)] == ["AA.csv", "MM.CSV", "ZZ.csv"]


def test_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    r = read_sec_fetcher_csv(tmp_path / "GONE.csv", None)
    assert r.error and "cannot read" in r.error


def test_simple_quotes_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from narrative_pipeline.readers import sec_fetcher_csv

    def no_full_parser(*_args):
        raise AssertionError("full CSV parser used for simply quoted fields")

    monkeypatch.setattr(sec_fetcher_csv, "_split_quoted", no_full_parser)
    path = write(
        tmp_path, "SQ.csv", '"Assets",Liabilities,"accn"\r\n"1::USD","",A1\r\n,"2::usd","A2"\r\n'
    )
    r = read_sec_fetcher_csv(path, None)
    assert as_dict(r) == {("A1", "Assets", "USD"): 1.0, ("A2", "Liabilities", "USD"): 2.0}


@pytest.mark.parametrize(
    "text",
    [
        'Assets,accn\n"1::USD","A""1"\n',
        'Assets,accn\n"1::USD","A\n1"\n',
        'Assets,Liabilities,accn\nx"1::USD",2::USD,A1\n',
    ],
)
def test_complex_quotes_use_the_full_parser(tmp_path: Path, text: str) -> None:
    from narrative_pipeline.readers.sec_fetcher_csv import only_simple_quotes

    assert not only_simple_quotes(text)
    r = read_sec_fetcher_csv(write(tmp_path, "CQ.csv", text), None)
    assert r.error is None


def test_empty_frames_are_independent_of_their_template() -> None:
    """empty_filings/empty_facts hand out shallow copies: a change to one must not reach the next."""
    from narrative_pipeline.readers.base import empty_facts, empty_filings

    filings, facts = empty_filings(), empty_facts()
    filings["fy"] = filings["fy"].astype("float64")
    filings["extra"] = []
    del facts["value"]
    assert str(empty_filings()["fy"].dtype) == "Int64" and "extra" not in empty_filings()
    assert list(empty_facts().columns) == ["accn", "concept", "unit", "value"]
