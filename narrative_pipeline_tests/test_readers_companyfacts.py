"""SEC companyfacts reader: real documents, dedupe rule, .json/.json.gz/.zip, bad input."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from narrative_pipeline.readers import read_companyfacts


def doc(units: dict, namespace: str = "us-gaap", extra: dict | None = None) -> dict:
    facts = {namespace: {"Assets": {"label": "Assets", "units": units}}}
    facts.update(extra or {})
    return {"cik": 1, "entityName": "Test Co", "facts": facts}


def fact(val, accn="A1", end="2024-12-31", start=None, fy=2024, fp="FY", form="10-K"):
    out = {"val": val, "accn": accn, "end": end, "fy": fy, "fp": fp, "form": form}
    out["filed"] = "2025-02-01"
    if start:
        out["start"] = start
    return out


def one(path: Path, taxonomy=None):
    results = list(read_companyfacts(path, taxonomy))
    assert len(results) == 1
    return results[0]


def test_real_documents(shared_data: Path) -> None:
    for path in sorted((shared_data / "companyfacts").glob("*.json.gz")):
        with gzip.open(path) as fh:
            raw = json.load(fh)
        keys = {
            (f["accn"], concept, unit.upper())
            for ns in ("us-gaap", "dei")
            for concept, body in raw["facts"].get(ns, {}).items()
            for unit, items in body["units"].items()
            for f in items
        }
        r = one(path)
        assert r.error is None
        assert r.ticker == path.name.split("_")[0]
        assert len(r.facts) == len(keys) > 5000
        assert set(zip(r.facts["accn"], r.facts["concept"], r.facts["unit"], strict=True)) == keys
        assert r.duplicate_facts > 0
        assert set(r.filings["accn"]) == {k[0] for k in keys}
        assert r.filings["accn"].is_unique


def test_dedupe_keeps_latest_end_then_latest_start(tmp_path: Path) -> None:
    units = {
        "USD": [
            fact(1, end="2023-12-31"),
            fact(2, end="2024-12-31", start="2024-01-01"),
            fact(3, end="2024-12-31", start="2024-10-01"),  # the quarter: kept
            fact(4, end="2024-06-30"),
        ]
    }
    path = tmp_path / "TST.json"
    path.write_text(json.dumps(doc(units)))
    r = one(path)
    assert r.facts["value"].tolist() == [3.0]
    assert r.duplicate_facts == 3
    assert r.filings[["accn", "form", "fy", "fp"]].values.tolist() == [["A1", "10-K", 2024, "FY"]]


def test_non_numeric_and_other_namespaces(tmp_path: Path) -> None:
    units = {"usd": [fact("abc", accn="A1"), fact(None, accn="A2"), fact(5, accn="A3")]}
    extra = {"srt": {"X": {"units": {"USD": [fact(1)]}}}}
    path = tmp_path / "ODD_companyfacts.json.gz"
    path.write_bytes(gzip.compress(json.dumps(doc(units, extra=extra)).encode()))
    r = one(path)
    assert r.ticker == "ODD"
    assert r.facts[["accn", "unit", "value"]].values.tolist() == [["A3", "USD", 5.0]]
    assert r.skipped_cells == 2 and r.non_numeric_units == {"USD": 2}
    assert any("srt" in m for m in r.messages)


def test_taxonomy_filter_applies_to_dei_too(tmp_path: Path) -> None:
    extra = {"dei": {"EntityPublicFloat": {"units": {"USD": [fact(9)]}}}}
    path = tmp_path / "T.json"
    path.write_text(json.dumps(doc({"USD": [fact(1)]}, extra=extra)))
    assert set(one(path).facts["concept"]) == {"Assets", "EntityPublicFloat"}
    r = one(path, {"Assets"})
    assert set(r.facts["concept"]) == {"Assets"} and r.skipped_columns == ["EntityPublicFloat"]


def test_zip_archive_yields_each_member_and_survives_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "companyfacts.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("CIK0000000001.json", json.dumps(doc({"USD": [fact(1)]})))
        z.writestr("CIK0000000002.json", "{not json")
        z.writestr("CIK0000000003.json", json.dumps({"cik": 3}))
        z.writestr("readme.txt", "ignored")
    results = list(read_companyfacts(path))
    assert [r.ticker for r in results] == ["CIK0000000001", "CIK0000000002", "CIK0000000003"]
    assert len(results[0].facts) == 1 and results[0].error is None
    assert "not valid JSON" in results[1].error
    assert "no 'facts'" in results[2].error


@pytest.mark.parametrize("content", [b"", b"[1,2]", b"\x1f\x8b garbage"])
def test_bad_files_report_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "BAD.json"
    path.write_bytes(content)
    r = one(path)
    assert r.error and r.facts.empty


def test_bad_zip_and_bad_gzip(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"PK not a zip")
    (tmp_path / "y.json.gz").write_bytes(b"not gzip")
    assert "zip" in one(tmp_path / "x.zip").error
    assert one(tmp_path / "y.json.gz").error


@pytest.mark.parametrize("value", [[1], "text", 5, True])
def test_a_namespace_that_is_not_an_object_is_not_read(tmp_path: Path, value) -> None:
    """`"us-gaap": [1]` raised AttributeError out of the reader (and stopped a zip's ingest)."""
    path = tmp_path / "AAPL.json"
    path.write_text(json.dumps({"facts": {"us-gaap": value}}))
    (result,) = list(read_companyfacts(path))
    assert "namespace 'us-gaap' is not an object; not read" in result.messages
    assert result.error is not None and "no usable filing" in result.error
    path.write_text(
        json.dumps({"facts": {"us-gaap": value, **doc({"USD": [fact(7)]}, "dei")["facts"]}})
    )
    (result,) = list(read_companyfacts(path))
    assert result.error is None and result.facts["value"].tolist() == [7.0]


def test_a_damaged_gzip_stream_fails_that_file(tmp_path: Path) -> None:
    """A .json.gz whose deflate data is damaged (an invalid block type) raised zlib.error out
    of the reader; it is a failed file now, and the same member inside a zip fails alone."""
    data = bytearray(gzip.compress(json.dumps(doc({"USD": [fact(1)]})).encode()))
    data[10] |= 0x06  # the first deflate block's type: 3, reserved
    (tmp_path / "BAD.json.gz").write_bytes(bytes(data))
    assert "cannot read file: " in one(tmp_path / "BAD.json.gz").error
    with zipfile.ZipFile(tmp_path / "companyfacts.zip", "w") as archive:
        archive.writestr("CIK1.json.gz", bytes(data))
        archive.writestr("CIK2.json", json.dumps(doc({"USD": [fact(2)]})))
    bad, good = read_companyfacts(tmp_path / "companyfacts.zip")
    assert "cannot read archive member: " in bad.error and good.fact_count == 1


def test_a_document_without_usable_filing_is_an_error(tmp_path: Path) -> None:
    """`{"facts": {}}` used to replace a ticker's data with nothing (issue 12)."""
    path = tmp_path / "AAPL.json"
    path.write_text(json.dumps({"facts": {}}))
    (result,) = list(read_companyfacts(path))
    assert result.error is not None and "no usable filing" in result.error
    assert result.facts.empty


def _gzip_bomb(path: Path, decompressed_mib: int) -> Path:
    """A .json.gz that decompresses to `decompressed_mib` MiB of JSON whitespace (~1000:1)."""
    import zlib

    block = b" " * (1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    with path.open("wb") as out:
        for _ in range(decompressed_mib):
            out.write(packer.compress(block))
        out.write(packer.compress(b'{"facts": {}}') + packer.flush())
    return path


BOMB_PROBE = """
import resource, sys
from narrative_pipeline.readers import read_companyfacts
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
(result,) = list(read_companyfacts(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, result.error)
"""


def test_a_gzip_bomb_is_refused_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 GiB of decompressed JSON behind ~1 MB of gzip: the reader stops at the cap (here
    16 MiB), names the file, and the process grows by about the cap, not by the bomb
    (peak RSS measured in a child process)."""
    import subprocess
    import sys

    bomb = _gzip_bomb(tmp_path / "BOMB.json.gz", 1024)
    assert bomb.stat().st_size < 2 << 20
    monkeypatch.setenv("NARRATIVE_MAX_DOCUMENT_MB", "16")
    out = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, str(bomb)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    grown_mib, error = out.split(" ", 1)
    assert "NARRATIVE_MAX_DOCUMENT_MB" in error and str(bomb) in error
    assert int(grown_mib) < 64, f"peak RSS grew {grown_mib} MiB reading a 16 MiB-capped bomb"


def test_zip_members_are_capped_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NARRATIVE_MAX_DOCUMENT_MB", "1")
    path = tmp_path / "companyfacts.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("CIK1.json", b" " * (3 << 20) + b'{"facts": {}}')
        archive.write(_gzip_bomb(tmp_path / "inner.json.gz", 4), "CIK2.json.gz")
    results = list(read_companyfacts(path))
    assert [r.ticker for r in results] == ["CIK1", "CIK2"]
    assert all(r.error and "NARRATIVE_MAX_DOCUMENT_MB" in r.error for r in results)
