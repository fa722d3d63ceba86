"""The companyfacts fast paths (the native scanner, readers/companyfacts_native.py; the Arrow
path, readers/companyfacts_fast.py with orjson; the zip member process) give exactly the
reference path's results: the same facts and filings frames (values, order, dtypes), counts and
messages, on the real documents and on generated odd ones."""

from __future__ import annotations

import gzip
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from narrative_pipeline.readers import (
    companyfacts,
    companyfacts_fast,
    companyfacts_native,
    companyfacts_worker,
)
from narrative_pipeline.readers.base import ReadResult


def _read(data: bytes, taxonomy: set[str] | None) -> ReadResult:
    return companyfacts.read_companyfacts_stream(io.BytesIO(data), "doc.json", "TST", taxonomy)


def both(data: bytes, taxonomy: set[str] | None, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """(public read: the native scanner where built, reference read: the native scanner and
    the fast path turned off, and the stdlib JSON parser); the Arrow fast path alone (the
    native scanner off) is checked against the reference here too."""
    public = _read(data, taxonomy)
    with monkeypatch.context() as patch:
        patch.setenv(companyfacts_native.ENV, "0")
        arrow = _read(data, taxonomy)
        patch.setattr(companyfacts, "fast_frames", lambda lists, result: False)
        patch.setattr(companyfacts, "parse_json", json.loads)
        reference = _read(data, taxonomy)
    assert_same(arrow, reference)
    return public, reference


def assert_same(fast: ReadResult, reference: ReadResult) -> None:
    pd.testing.assert_frame_equal(fast.facts, reference.facts)
    pd.testing.assert_frame_equal(fast.filings, reference.filings)
    for name in (
        "error",
        "messages",
        "skipped_cells",
        "non_numeric_units",
        "skipped_columns",
        "duplicate_facts",
        "taxonomy_applied",
    ):
        assert getattr(fast, name) == getattr(reference, name), name


def took_native_path(data: bytes) -> bool:
    """Whether the native scanner read this document (rather than declining it)."""
    scanned = companyfacts_native.scan(data)
    if scanned is None:
        return False
    result = ReadResult("doc.json", "TST")
    lists = companyfacts._unit_lists(scanned.facts, None, result)
    return companyfacts_native.native_frames(scanned, lists, None, result)


def took_fast_path(data: bytes) -> bool:
    doc = json.loads(data)
    result = ReadResult("doc.json", "TST")
    return companyfacts.fast_frames(companyfacts._unit_lists(doc["facts"], None, result), result)


@pytest.mark.parametrize("with_taxonomy", [False, True])
def test_real_documents_read_the_same(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, with_taxonomy: bool
) -> None:
    paths = sorted((shared_data / "companyfacts").glob("*.json.gz"))
    assert paths
    for path in paths:
        data = gzip.decompress(path.read_bytes())
        taxonomy = None
        if with_taxonomy:  # a taxonomy holding every other concept
            names = sorted(json.loads(data)["facts"]["us-gaap"])
            taxonomy = set(names[::2])
        fast, reference = both(data, taxonomy, monkeypatch)
        assert took_fast_path(data)
        assert took_native_path(data) or companyfacts_native.scanner() is None
        assert len(fast.facts) > 2000 and fast.duplicate_facts > 2000
        assert_same(fast, reference)


def entry(**fields: Any) -> dict:
    base = {
        "end": "2024-12-31",
        "val": 1000,
        "accn": "0001-24-000001",
        "fy": 2024,
        "fp": "FY",
        "form": "10-K",
        "filed": "2025-02-01",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def document(concepts: dict, dei: dict | None = None, other: dict | None = None) -> bytes:
    facts: dict = {"us-gaap": concepts}
    if dei is not None:
        facts["dei"] = dei
    if other is not None:
        facts["srt"] = other
    return json.dumps({"cik": 1, "entityName": "T", "facts": facts}).encode()


ODD = {
    "missing units": document({"A": {"label": "A"}, "B": {"units": {"USD": [entry()]}}}),
    "units not an object": document({"A": {"units": []}, "B": {"units": {"USD": [entry()]}}}),
    "concept not an object": document({"A": 5, "B": {"units": {"USD": [entry()]}}}),
    "fact list not a list": document({"A": {"units": {"USD": 7, "EUR": [entry(val=2)]}}}),
    "non-numeric values": document(
        {
            "A": {
                "units": {
                    "USD": [entry(val="abc"), entry(val=None), entry(val=...), entry(val=3.5)],
                    "shares": [entry(val="12", accn="x2")],
                }
            }
        }
    ),
    "boolean value": document({"A": {"units": {"USD": [entry(val=True), entry(val=0)]}}}),
    "integer past 2**53": document({"A": {"units": {"USD": [entry(val=2**53 + 1)]}}}),
    "integer past 2**64": document({"A": {"units": {"USD": [entry(val=2**70)]}}}),
    "null and non-object facts": document({"A": {"units": {"USD": [None, 3, entry()]}}}),
    "missing accn": document({"A": {"units": {"USD": [entry(accn=...), entry(accn=None)]}}}),
    "numeric accn": document({"A": {"units": {"USD": [entry(accn=12)]}}}),
    "odd fy": document(
        {
            "A": {
                "units": {
                    "USD": [
                        entry(fy=2020.0, accn="a1"),
                        entry(fy=" 2021", accn="a2"),
                        entry(fy=12345678901, accn="a3"),
                        entry(fy=True, accn="a4"),
                        entry(fy=None, accn="a5"),
                        entry(fy=-7, accn="a6"),
                    ]
                }
            }
        }
    ),
    "odd form fields": document(
        {"A": {"units": {"USD": [entry(form=10, fp=None, filed=20250201), entry(accn="b")]}}}
    ),
    "duplicates across forms and periods": document(
        {
            "A": {
                "units": {
                    "USD": [
                        entry(end="2023-12-31", form="10-K", val=1),
                        entry(end="2024-12-31", start="2024-01-01", val=2),
                        entry(end="2024-12-31", start="2024-10-01", val=3, form="10-K/A"),
                        entry(end="2024-12-31", start="2024-10-01", val=4),
                        entry(end=None, val=5),
                        entry(end="2024-12-31", start=None, val=6),
                    ]
                }
            },
            "B": {"units": {"usd": [entry(val=7)], " USD ": [entry(val=8)], "USD": [entry()]}},
        },
        dei={"A": {"units": {"USD": [entry(val=9, accn="0001-24-000001")]}}},
    ),
    "frames and other namespaces": document(
        {"A": {"units": {"USD": [entry(frame="CY2024"), entry(frame="CY2023Q4I", accn="c")]}}},
        other={"X": {"units": {"USD": [entry()]}}},
    ),
    "unicode": document({"Ä": {"units": {"€": [entry(accn="é-1"), entry(accn="e-1", end="z")]}}}),
    "raw UTF-8": json.dumps(
        {"facts": {"us-gaap": {"Ä": {"units": {"€": [entry(accn="é-1"), entry(accn="e-1")]}}}}},
        ensure_ascii=False,
    ).encode(),
    "repeated keys": b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"accn": "a", "val": 1}]'
    b'}}, "B": {"units": {"USD": [{"accn": "a", "val": 2}], "EUR": [{"accn": "b", "val": 3}], '
    b'"USD": [{"accn": "c", "val": 4}]}, "units": {"usd": [{"accn": "d", "val": 5}], "USD": '
    b'[{"accn": "e", "val": 6}], "usd": [{"accn": "e", "val": 7}]}}, "A": {"units": {"USD": '
    b'[{"accn": "f", "val": 8}]}}}, "dei": {"A": {"units": {"USD": [{"accn": "g", "val": 9}]}}}}}',
    "repeated namespace": b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"accn": "a", '
    b'"val": 1}]}}}, "dei": {"A": {"units": {"USD": [{"accn": "g", "val": 8}]}}}, "us-gaap": '
    b'{"C": {"units": {"X": [{"accn": "h", "val": 9}]}}}}}',
    "empty facts": b'{"facts": {}}',
    "empty unit lists": document({"A": {"units": {"USD": []}}}),
    "NaN (stdlib only)": b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"val": NaN, '
    b'"accn": "a"}, {"val": Infinity, "accn": "b"}, {"val": 1, "accn": "c"}]}}}}}',
    "not JSON": b'{"facts": ',
    "not a companyfacts document": b"[1, 2]",
}


@pytest.mark.parametrize("name", sorted(ODD))
@pytest.mark.parametrize("taxonomy", [None, {"A", "B"}])
def test_odd_documents_read_the_same(
    name: str, taxonomy: set[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, reference = both(ODD[name], taxonomy, monkeypatch)
    assert_same(fast, reference)


def test_plain_documents_take_the_fast_path_and_odd_values_do_not() -> None:
    assert took_fast_path(ODD["duplicates across forms and periods"])
    assert took_fast_path(ODD["non-numeric values"]) is False  # text val
    assert took_fast_path(ODD["boolean value"]) is False
    assert took_fast_path(ODD["missing units"])


NATIVE = [  # the odd documents the native scanner reads itself (it declines the others)
    "missing units",
    "units not an object",
    "concept not an object",
    "fact list not a list",
    "missing accn",
    "odd fy",
    "odd form fields",
    "duplicates across forms and periods",
    "frames and other namespaces",
    "raw UTF-8",
    "repeated keys",
    "repeated namespace",
    "empty facts",
    "empty unit lists",
]


def test_the_native_scanner_reads_plain_documents_and_declines_odd_values() -> None:
    if companyfacts_native.scanner() is None:
        pytest.skip("the native scanner is not built (no C compiler at install time)")
    assert {name for name in ODD if took_native_path(ODD[name])} == set(NATIVE)
    assert [name for name in NATIVE if not companyfacts_native.scan(ODD[name]).plain] == [
        "repeated keys",  # read from the ranges the dicts keep, not from every row
        "repeated namespace",
    ]
    rng = random.Random(13)
    assert all(took_native_path(random_document(rng)) for _ in range(60))


def random_document(rng: random.Random) -> bytes:
    """Many facts over few accns/concepts/units/dates, so repeats and ties are common."""
    concepts: dict = {}
    for c in range(rng.randint(0, 6)):
        units: dict = {}
        for unit in rng.sample(["USD", "usd", "shares", "USD/shares", " pure"], rng.randint(1, 3)):
            units[unit] = [
                entry(
                    accn=f"a{rng.randint(0, 4)}",
                    end=rng.choice(["2024-12-31", "2024-09-30", "2023-12-31", ...]),
                    start=rng.choice(["2024-01-01", "2024-07-01", ...]),
                    val=rng.choice([rng.randint(-(10**6), 10**6), rng.random() * 1e9, 0, 1.0]),
                    fy=rng.choice([2023, 2024, None]),
                    form=rng.choice(["10-K", "10-Q", "10-K/A"]),
                    frame=rng.choice(["CY2024", ...]),
                )
                for _ in range(rng.randint(0, 12))
            ]
        concepts[f"C{c}"] = {"label": "x", "units": units}
    return document(concepts, dei={"C0": {"units": {"USD": [entry(accn="a1", val=5)]}}})


def test_random_documents_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(13)
    for _ in range(60):
        data = random_document(rng)
        fast, reference = both(data, None, monkeypatch)
        assert_same(fast, reference)


def bulk_zip(tmp_path: Path) -> tuple[Path, int]:
    """A zip with enough members for the helper process, some of them bad."""
    rng = random.Random(7)
    archive = tmp_path / "companyfacts.zip"
    n = companyfacts_worker.MIN_MEMBERS + 6
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            data = random_document(rng) if i % 7 else b"not json"
            zf.writestr(f"CIK{i:010d}.json", data)
        zf.writestr("CIK9999999999.json.gz", b"not gzip")
    return archive, n


def test_zip_members_read_in_a_helper_process_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, n = bulk_zip(tmp_path)
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "1")
    assert companyfacts_worker.use_member_worker(n + 1)
    with_child = list(companyfacts.read_companyfacts(archive))
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "0")
    here = list(companyfacts.read_companyfacts(archive))
    assert [r.source for r in with_child] == [r.source for r in here]
    assert len(here) == n + 1 and sum(bool(r.error) for r in here) >= 6
    for a, b in zip(with_child, here, strict=True):
        assert_same(a, b)
    with monkeypatch.context() as patch:  # the reference path, member by member
        patch.setenv(companyfacts_native.ENV, "0")
        patch.setattr(companyfacts, "fast_frames", lambda lists, result: False)
        patch.setattr(companyfacts, "parse_json", json.loads)
        reference = list(companyfacts.read_companyfacts(archive))
    for a, b in zip(here, reference, strict=True):
        assert_same(a, b)


def test_a_dead_helper_process_leaves_every_member_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, n = bulk_zip(tmp_path)
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "0")
    here = list(companyfacts.read_companyfacts(archive))
    monkeypatch.setenv("NARRATIVE_INGEST_PROCESSES", "1")
    monkeypatch.setattr(companyfacts_worker, "CHILD_MODULE", "narrative_pipeline.no_such_module")
    fallback = list(companyfacts.read_companyfacts(archive))
    assert [r.source for r in fallback] == [r.source for r in here] and len(here) == n + 1
    for a, b in zip(fallback, here, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_the_sort_order_is_lexsorts_stable_order(seed: int) -> None:
    """fill's dedup order: the same as np.lexsort (stable) on keys with ties, -1 (null) and
    zero rows, through the combined-key sort and, for key ranges too wide for one int64,
    through lexsort itself."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3000)) if seed else 0
    highs = [3, 40, 2, 5, 5] if seed % 2 else [2**20, 2**20, 2**10, 2**12, 2**12]
    keys = [rng.integers(-1, high, n) for high in highs]
    expected = np.lexsort(keys[::-1])
    got = companyfacts_fast._sort_order(keys)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
