"""The current sec-fetcher layout on real-shaped files: the real companyfacts documents in
../shared/data are turned into current-layout CSVs here, following the row rules of
../shared/reference/sec-fetcher-csv-layouts.md (independently of the reader), then read back.
Skips without the shared data."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from narrative_pipeline.readers import read_sec_fetcher_csv
from narrative_pipeline.readers.sec_fetcher_batch import read_sec_fetcher_csvs
from narrative_pipeline_tests.test_readers_csv import as_dict
from narrative_pipeline_tests.test_readers_csv_batch import assert_same
from narrative_pipeline_tests.test_readers_csv_layouts import CURRENT

RANK = {"FY": 4, "Q3": 3, "Q2": 2, "Q1": 1}


def observations(doc: dict) -> list[dict]:
    """Every observation that survives sec-fetcher's filters, with its (fy, fp) period."""
    kept = []
    for namespace in ("us-gaap", "dei"):
        for concept, body in doc["facts"].get(namespace, {}).items():
            for unit, items in body.get("units", {}).items():
                for f in items:
                    fp, form, end = f.get("fp"), f.get("form") or "", f.get("end") or ""
                    if not fp or form in ("8-K", "8-K/A") or len(end) < 4:
                        continue
                    fy = f.get("fy") or int(end[:4])
                    if fy > int(end[:4]) + (0 if fp == "FY" else 1):
                        continue
                    fp = "FY" if fp == "Q4" else fp
                    kept.append({**f, "fy": fy, "fp": fp, "concept": concept, "unit": unit})
    return kept


def current_layout(doc: dict) -> tuple[str, dict]:
    """(CSV text, expected facts keyed like the reader's rows)."""
    winners: dict[tuple, dict] = {}
    latest: dict[tuple, dict] = {}
    for f in observations(doc):
        period = (f["fy"], f["fp"])
        key = (*period, f["concept"], f["unit"])
        if key not in winners or (f["filed"], f["end"]) >= (
            winners[key]["filed"],
            winners[key]["end"],
        ):
            winners[key] = f
        if period not in latest or (f["filed"], f["end"]) >= (
            latest[period]["filed"],
            latest[period]["end"],
        ):
            latest[period] = f
    first_unit: dict[tuple, tuple] = {}  # one unit per cell, as sec-fetcher's one column per fact
    for (fy, fp, concept, unit), f in winners.items():
        first_unit.setdefault((fy, fp, concept), (unit, f))
    periods = sorted(latest, key=lambda p: (p[0], RANK.get(p[1], 0)), reverse=True)
    concepts = list(dict.fromkeys(f["concept"] for f in winners.values()))
    accn_uses = Counter(latest[p]["accn"] for p in periods)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CURRENT + concepts)
    expected = {}
    for i, period in enumerate(periods):
        meta = latest[period]
        form = meta["form"]
        row = [i, *period, meta["end"], meta["filed"], form.removesuffix("/A")]
        row += [str(form.endswith("/A")).lower(), meta["accn"], f"https://sec.gov/{meta['accn']}"]
        key = meta["accn"]
        if accn_uses[key] > 1:
            key = f"{key}#{period[0]}-{period[1]}"
        for concept in concepts:
            cell = ""
            if (*period, concept) in first_unit:
                unit, f = first_unit[(*period, concept)]
                value = float(f["val"])
                cell = f"{np.format_float_positional(value, trim='-')}::{unit}"
                expected[(key, concept, unit.upper())] = value
            row.append(cell)
        writer.writerow(row)
    return out.getvalue(), expected


def test_real_documents_as_current_layout(shared_data: Path, tmp_path: Path) -> None:
    paths, expected = [], {}
    for source in sorted((shared_data / "companyfacts").glob("*.json.gz")):
        with gzip.open(source) as fh:
            text, facts = current_layout(json.load(fh))
        path = tmp_path / f"{source.name.split('_')[0]}.csv"
        path.write_text(text)
        paths.append(path)
        expected[path.name] = facts
    assert len(paths) == 3
    for path in paths:
        result = read_sec_fetcher_csv(path, None)
        assert result.error is None
        got = as_dict(result)
        # Cells with a second unit for the same (period, concept) are not written (one column
        # per fact), so compare on what was written.
        assert got == expected[path.name]
        assert len(got) > 1000
        unexpected = [
            m
            for m in result.messages
            if not m.startswith("no taxonomy") and "keyed as 'accn#fy-fp'" not in m
        ]
        assert unexpected == []
        assert result.filings["period_end"].notna().all()
        assert result.filings["is_amendment"].notna().all()
    batch = read_sec_fetcher_csvs(paths, None)
    for path, got in zip(paths, batch.results(), strict=True):
        assert_same(got, read_sec_fetcher_csv(path, None))
