"""Batched CSV reading (read_sec_fetcher_csvs) gives exactly the per-file reader's results."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from narrative_pipeline.readers import read_sec_fetcher_csv
from narrative_pipeline.readers import sec_fetcher_batch as reader
from narrative_pipeline.readers.sec_fetcher_batch import read_sec_fetcher_csvs

FIELDS = (
    "source",
    "ticker",
    "error",
    "skipped_cells",
    "non_numeric_units",
    "skipped_columns",
    "messages",
    "taxonomy_applied",
    "duplicate_facts",
)

GOOD = "Assets,Liabilities,EPS,fy,fp,form,filed,accn\n1::USD, 2::usd ,,2024,FY,10-K,2024-02-01,A1\n"
BAD_INPUTS = {
    "BADCELLS.csv": (
        "Assets,Liabilities,EPS,fy,fp,form,filed,accn\n"
        "12::,abc::USD,0.5::usd/shares,2024,FY,10-K,2024-01-01,A1\n"
        "1e400::USD,NaN::usd,-3::USD/Shares,2023,FY,10-K,2023-01-01,A2\n"
    ),
    "NOUNIT.csv": "Assets,fy,fp,form,filed,accn\n8,2024,FY,10-K,2024-01-01,A1\n",
    "BOM.csv": b"\xef\xbb\xbfAssets,fy,fp,form,filed,accn\r\n5::USD,2024,FY,10-K,x,A1\r\n",
    "DUP.csv": "Assets,Assets,accn,accn\n1::USD,2::USD,A1,B1\n",
    "NOFORM.csv": "Assets,fy,fp,filed,accn\n1::USD,2024,FY,2024-02-01,A1\n",
    "NOACCN.csv": "Assets,fy\n1::USD,2024\n",
    "EMPTY.csv": "",
    "BLANK.csv": "\n\n  \n",
    "LATIN1.csv": b"Assets,accn\n1::USD,\xe9\xe9\n",
    "HDR.csv": "Assets,form,fy,fp,filed,accn\n",
    "ROWS.csv": "Assets,fy,fp,form,filed,accn\n1::USD,1,FY,K,x,A1\n2::USD,A2,extra\n",
    "QUOTED.csv": '"Assets","Note",fy,fp,form,filed,accn\n"1::USD","2,5::USD",2024,FY,K,x,"A1"\n',
    "SIMPLEQ.csv": '"Assets",fy,fp,form,filed,"accn"\r\n"1::USD","",FY,"",x,A1\r\n',
    "REP.csv": "Assets,Liabilities,fy,fp,form,filed,accn\n1::USD,5::USD,1,Q,K,x,A1\n2::USD,,1,Q,K,x,A1\n",
    "NOACCNROW.csv": "Assets,fy,fp,form,filed,accn\n1::USD,1,Q,K,x,A1\n2::USD,1,Q,K,x,\n",
    "EMPTYNAME.csv": "Assets,,fy,fp,form,filed,accn\n1::USD,3::USD,1,Q,K,x,A1\n",
    "BADFY.csv": "Assets,fy,fp,form,filed,accn\n1::USD,20x4,Q,K,x,A1\n",
    "GOOD1.csv": GOOD,
    "GOOD2.csv": GOOD.replace("A1", "A2"),
}


def frame_records(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(row) for row in frame.astype(object).where(frame.notna(), None).values]


def assert_same(batch_result, single) -> None:
    for name in FIELDS:
        assert getattr(batch_result, name) == getattr(single, name), (single.source, name)
    assert frame_records(batch_result.facts) == frame_records(single.facts), single.source
    assert frame_records(batch_result.filings) == frame_records(single.filings), single.source
    assert list(batch_result.facts.columns) == list(single.facts.columns)


def write_all(folder: Path, files: dict[str, str | bytes]) -> list[Path]:
    paths = []
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths.append(path)
    return paths


@pytest.mark.parametrize("taxonomy", [None, {"Assets", "EPS"}])
def test_bad_inputs_in_one_batch_match_the_per_file_reader(
    tmp_path: Path, taxonomy: set[str] | None
) -> None:
    paths = write_all(tmp_path, BAD_INPUTS) + [tmp_path / "MISSING.csv"]
    batch = read_sec_fetcher_csvs(paths, taxonomy)
    results = batch.results()
    assert len(results) == len(paths)
    for path, got in zip(paths, results, strict=True):
        assert_same(got, read_sec_fetcher_csv(path, taxonomy))
    errors = {Path(r.source).name for r in results if r.error}
    assert errors == {
        *("NOACCN.csv", "EMPTY.csv", "BLANK.csv", "LATIN1.csv", "MISSING.csv"),
        *("HDR.csv", "NOUNIT.csv"),  # no usable filing: held back (issue 12)
    }
    # every file without an error is in the columns, the others are not
    written = {Path(s).name for s in batch.columns.sources}
    assert written == {p.name for p in paths} - errors
    assert batch.columns.fact_count == sum(len(r.facts) for r in results)


def record_per_file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the batch reads one by one (a spy on the per-file reader)."""
    reread: list[str] = []
    per_file = reader.read_sec_fetcher_csv

    def spy(path, taxonomy=None):
        reread.append(Path(path).name)
        return per_file(path, taxonomy)

    monkeypatch.setattr(reader, "read_sec_fetcher_csv", spy)
    return reread


def test_clean_files_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["GOOD1.csv", "GOOD2.csv", "SIMPLEQ.csv", "BOM.csv", "BADFY.csv", "BADCELLS.csv"]
    paths = write_all(tmp_path, {n: BAD_INPUTS[n] for n in names})
    reread = record_per_file_reads(monkeypatch)
    batch = read_sec_fetcher_csvs(paths, None)
    assert reread == ["BADCELLS.csv"]  # skipped cells: re-read for the reader's own messages
    monkeypatch.undo()
    for path, got in zip(paths, batch.results(), strict=True):
        assert_same(got, read_sec_fetcher_csv(path, None))


def test_real_files_and_copies_match(shared_data: Path, tmp_path: Path) -> None:
    sources = sorted((shared_data / "sec-fetcher-csvs").glob("*.csv"))
    paths = []
    for i in range(8):
        target = tmp_path / f"{sources[i % len(sources)].stem}{i}.csv"
        shutil.copyfile(sources[i % len(sources)], target)
        paths.append(target)
    single = [read_sec_fetcher_csv(p, None) for p in paths]
    batch = read_sec_fetcher_csvs(paths, None)
    assert batch.columns.fact_count == sum(len(r.facts) for r in single) > 10_000
    for got, want in zip(batch.results(), single, strict=True):
        assert_same(got, want)
    taxonomy = {"Assets", "Revenues", "NetIncomeLoss", "EarningsPerShareDiluted"}
    for got, path in zip(read_sec_fetcher_csvs(paths, taxonomy).results(), paths, strict=True):
        assert_same(got, read_sec_fetcher_csv(path, taxonomy))
