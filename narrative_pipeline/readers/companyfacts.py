"""SEC companyfacts JSON (`.json`, `.json.gz`, or the bulk `companyfacts.zip`) -> ReadResults.

Layout: `facts -> {namespace: {concept: {label, description, units: {UNIT: [{end, val, accn,
fy, fp, form, filed, start?, frame?}]}}}}`.

Decisions (documented because companyfacts is richer than sec-fetcher's one-cell-per-filing):
- Namespaces: `us-gaap` and `dei` are read (sec-fetcher CSVs carry the dei columns
  EntityCommonStockSharesOutstanding/EntityPublicFloat too); the taxonomy filter then applies
  exactly as for CSV columns. Other namespaces (srt, invest, ifrs-full, ...) are skipped and
  counted in a message.
- A filing reports the same (concept, unit) for several periods (this year and comparatives).
  One fact is kept per (accn, concept, unit): the one with the latest `end`, then the latest
  `start` (the shortest period ending then, e.g. the quarter rather than year-to-date), then
  the last listed. The number dropped is `duplicate_facts`.
- Filing fields (form, fy, fp, filed) come from the facts of that accn (the same on each).
- Ticker: the file name (`AAPL.json`, `AAPL_companyfacts.json.gz`); inside the bulk zip the
  members are named by CIK (`CIK0000320193.json`) and that name is used.

Bounded input (readers/limits.py): a document is read, or decompressed as a stream, up to
NARRATIVE_MAX_DOCUMENT_MB and refused past it (a `.json.gz` bomb costs the cap, not its
decompressed size); a `.json` zip member is inflated whole, at most its declared size, itself
checked against the cap first (readers/zip_member.py: one read, ISA-L when installed, CRC-32). A document with no usable filing (e.g. `{"facts": {}}`) is an error, so the
ticker's stored data is kept.

Speed (whole-SEC ingestion was bound by this reader), fastest first; each path hands a
document it cannot read exactly to the next:
1. the native scanner (companyfacts_native.py over the C extension `_companyfacts_scan`, when
   built and not turned off by NARRATIVE_COMPANYFACTS_NATIVE=0): columns straight from the bytes;
2. orjson (the stdlib parser only when orjson refuses a document, so errors and the stdlib's
   extensions such as NaN read as before), then companyfacts_fast.py's Arrow conversion;
3. the reference path here (`_reference_frames`: one comprehension per field per (concept,
   unit) list, then pandas), which defines the behaviour; tests compare all three.
Paths 1 and 2 share `_unit_lists` above the facts and companyfacts_fast.fill below them.
"""

from __future__ import annotations

import gzip
import json
import logging
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from narrative_pipeline.core.fingerprint import Fingerprint, file_fingerprint
from narrative_pipeline.readers import companyfacts_native as native
from narrative_pipeline.readers import companyfacts_worker as worker
from narrative_pipeline.readers import zip_member
from narrative_pipeline.readers.base import (
    ReadResult,
    drop_duplicate_facts,
    fy_column,
    ticker_from_name,
)
from narrative_pipeline.readers.companyfacts_fast import (
    ColumnsResult,
    UnitList,
    failed_result,
    fast_frames,
)
from narrative_pipeline.readers.limits import (
    InputTooLarge,
    max_document_bytes,
    read_file_capped,
    read_stream_capped,
)

log = logging.getLogger(__name__)
NAMESPACES = ("us-gaap", "dei")
FIELDS = ("accn", "end", "start", "form", "fy", "fp", "filed")


def read_companyfacts(
    path: str | Path, taxonomy_concepts: set[str] | None = None
) -> Iterator[ReadResult]:
    """One ReadResult per company document in `path` (a zip yields one per member)."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        yield from _read_zip(path, taxonomy_concepts)
        return
    ticker = ticker_from_name(path.name)
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = read_stream_capped(fh, str(path))
        else:
            data = read_file_capped(path)
    except InputTooLarge as exc:
        yield failed_result(str(path), ticker, str(exc))
        return
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged .gz stream
        yield failed_result(str(path), ticker, f"cannot read file: {exc}")
        return
    yield read_companyfacts_document(data, str(path), ticker, taxonomy_concepts)


def read_document_files(
    paths: list[Path], taxonomy_concepts: set[str] | None = None
) -> Iterator[tuple[Fingerprint | None, ReadResult]]:
    """Each single-document file's (fingerprint, ReadResult), in order: a folder of `.json` /
    `.json.gz` files read like a zip's members, a helper process parsing some of them when
    there are many (companyfacts_worker.py). The fingerprint is taken before the file is read
    (an edit made meanwhile shows up as a change on the next run); None when it cannot be."""
    if worker.use_member_worker(len(paths)):
        yield from worker.read_files(paths, taxonomy_concepts, read_fingerprinted)
        return
    for path in paths:
        yield read_fingerprinted(path, taxonomy_concepts)


def read_fingerprinted(
    path: Path, taxonomy_concepts: set[str] | None = None
) -> tuple[Fingerprint | None, ReadResult]:
    """One document file's fingerprint, then its ReadResult (a failed one, naming the file,
    when it cannot be read)."""
    try:
        fingerprint = file_fingerprint(path)
    except OSError as exc:
        return None, failed_result(
            str(path), ticker_from_name(path.name), f"cannot read file: {exc}"
        )
    return fingerprint, next(iter(read_companyfacts(path, taxonomy_concepts)))


def _read_zip(path: Path, taxonomy: set[str] | None) -> Iterator[ReadResult]:
    """Each `.json`/`.json.gz` member in name order; with many members, a helper process
    parses some of them (companyfacts_worker.py) while this one parses or writes others."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        yield failed_result(str(path), ticker_from_name(path.name), f"not a readable zip: {exc}")
        return
    with archive:
        members = [
            info
            for info in sorted(archive.infolist(), key=lambda i: i.filename)
            if not info.is_dir() and info.filename.lower().endswith((".json", ".json.gz"))
        ]
        if worker.use_member_worker(len(members)):
            yield from worker.read_members(path, archive, members, taxonomy, read_zip_member)
            return
        for info in members:
            yield read_zip_member(archive, info, path, taxonomy)


def read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, taxonomy: set[str] | None
) -> ReadResult:
    """One member of the bulk zip (source `zip!member`, ticker from the member's name)."""
    source = f"{path}!{info.filename}"
    ticker = ticker_from_name(info.filename)
    try:
        data = _read_member(archive, info, source)
    except InputTooLarge as exc:
        return failed_result(source, ticker, str(exc))
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:  # BadGzipFile: OSError
        return failed_result(source, ticker, f"cannot read archive member: {exc}")
    return read_companyfacts_document(data, source, ticker, taxonomy)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """One member's document, capped: a `.json` member read whole (zip_member.py: one read,
    one inflate, CRC checked), a `.json.gz` member decompressed as a stream (its declared size
    says nothing of what it inflates to, so only the stream is capped)."""
    limit = max_document_bytes()
    if not info.filename.lower().endswith(".gz"):
        return zip_member.read_member(archive, info, source, limit)
    with archive.open(info) as raw, gzip.GzipFile(fileobj=raw) as unzipped:
        return read_stream_capped(unzipped, source, limit)


def read_companyfacts_stream(
    fh: BinaryIO, source: str, ticker: str, taxonomy: set[str] | None
) -> ReadResult:
    """Parse one companyfacts document from an open binary stream."""
    try:
        data = read_stream_capped(fh, source)
    except InputTooLarge as exc:
        return failed_result(source, ticker, str(exc))
    except (ValueError, EOFError, OSError) as exc:
        return failed_result(source, ticker, f"not valid JSON: {exc}")
    return read_companyfacts_document(data, source, ticker, taxonomy)


def read_companyfacts_document(
    data: bytes, source: str, ticker: str, taxonomy: set[str] | None
) -> ReadResult:
    """Parse one companyfacts document already read (and capped) into memory."""
    try:
        result = _read_scanned(data, source, ticker, taxonomy)
        if result is None:  # not scanned natively: parsed here
            result = _read_parsed(parse_json(data), source, ticker, taxonomy)
    except (ValueError, EOFError, OSError) as exc:
        return failed_result(source, ticker, f"not valid JSON: {exc}")
    if not result.fact_count:
        if result.error:
            return result
        out = failed_result(
            source,
            ticker,
            "no usable filing (no us-gaap/dei fact with a number and an accn): "
            "file held back, stored data kept",
        )
        out.messages[:0] = result.messages
        return out
    if result.duplicate_facts:
        result.messages.append(
            f"{result.duplicate_facts} repeated (accn, concept, unit) facts (comparative "
            "periods) dropped: kept the latest end, then latest start"
        )
    return result


def _read_scanned(
    data: bytes, source: str, ticker: str, taxonomy: set[str] | None
) -> ReadResult | None:
    """The document read from the native scanner's columns; None when the scanner is absent
    or does not handle this document (companyfacts_native.py)."""
    scanned = native.scan(data)
    if scanned is None:
        return None
    result = ColumnsResult(source=source, ticker=ticker)
    lists = _unit_lists(scanned.facts, taxonomy, result, listed=not scanned.plain)
    return result if native.native_frames(scanned, lists, taxonomy, result) else None


def _read_parsed(doc: Any, source: str, ticker: str, taxonomy: set[str] | None) -> ReadResult:
    """The parsed document read by the fast path, or by the reference path when it must."""
    if not isinstance(doc, dict) or not isinstance(doc.get("facts"), dict):
        return failed_result(source, ticker, "no 'facts' object: not a companyfacts document")
    result = ColumnsResult(source=source, ticker=ticker)
    lists = _unit_lists(doc["facts"], taxonomy, result)
    if not fast_frames(lists, result):
        _reference_frames(lists, result)
    return result


def parse_json(data: bytes) -> Any:
    """The document, parsed by orjson; when orjson refuses it, by the stdlib (which raises the
    error reported, or reads what only it accepts: NaN, Infinity, UTF-16 text, huge ints)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _unit_lists(
    facts: dict, taxonomy: set[str] | None, result: ReadResult, listed: bool = True
) -> list[UnitList]:
    """(concept, unit, fact list) of each read concept, in document order; the skipped
    namespaces and concepts go to the result's messages. `listed=False`: the messages only
    (a plain scanned document takes its rows by concept, not from these lists)."""
    other = [ns for ns in facts if ns not in NAMESPACES]
    if other:
        n = sum(len(facts[ns]) for ns in other if isinstance(facts[ns], dict))
        result.messages.append(f"namespaces {sorted(other)} ({n} concepts) not read")
    if taxonomy is None:
        result.taxonomy_applied = False
        result.messages.append("no taxonomy: every concept taken, balance/period types unknown")
    lists: list[UnitList] = []
    for ns in NAMESPACES:
        concepts = facts.get(ns) or {}
        if not isinstance(concepts, dict):  # e.g. a list: nothing to read (it was a crash)
            result.messages.append(f"namespace {ns!r} is not an object; not read")
            continue
        for concept, body in concepts.items():
            if taxonomy is not None and concept not in taxonomy:
                result.skipped_columns.append(concept)
                continue
            units = body.get("units") if isinstance(body, dict) else None
            if not isinstance(units, dict):
                result.messages.append(f"concept {concept!r} has no units; skipped")
                continue
            if listed:
                lists.extend((concept, unit, items) for unit, items in units.items())
    if taxonomy is not None and result.skipped_columns:
        result.messages.append(
            f"{len(result.skipped_columns)} concepts outside the US-GAAP taxonomy skipped"
        )
    return lists


def _reference_frames(lists: list[UnitList], result: ReadResult) -> None:
    """The reference path (defines the behaviour): column lists, then pandas."""
    cols: dict[str, list] = {k: [] for k in (*FIELDS, "concept", "unit", "val")}
    for concept, unit, items in lists:
        _append_unit(cols, concept, unit, items)
    _build_frames(cols, result)


def _append_unit(cols: dict[str, list], concept: str, unit: str, items: Any) -> None:
    items = [f for f in items if isinstance(f, dict)] if isinstance(items, list) else []
    for name in FIELDS:
        cols[name].extend([f.get(name) for f in items])
    cols["val"].extend([f.get("val") for f in items])
    cols["concept"].extend([concept] * len(items))
    cols["unit"].extend([unit] * len(items))


def _as_text(values: list) -> pa.Array:
    """Strings as Arrow text; mixed types (e.g. a number where text is expected) via str()."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _build_frames(cols: dict[str, list], result: ReadResult) -> None:
    """Vectorised: numeric filter, dedupe per (accn, concept, unit), filings per accn."""
    frame = pd.DataFrame(
        {
            "accn": _as_text(cols["accn"]).to_pandas(),
            "concept": pd.Series(cols["concept"], dtype="str"),
            "unit": pd.Series(cols["unit"], dtype="str").str.upper().str.strip(),
            "value": pd.to_numeric(pd.Series(cols["val"], dtype=object), errors="coerce"),
            "end": _as_text(cols["end"]).to_pandas(),
            "start": _as_text(cols["start"]).to_pandas(),
        }
    )
    value = frame["value"].to_numpy(dtype="float64", na_value=np.nan)
    bad_value = ~np.isfinite(value)
    no_accn = frame["accn"].isna().to_numpy()
    if bad_value.any():
        result.skipped_cells += int(bad_value.sum())
        counts = frame.loc[bad_value, "unit"].value_counts()
        for unit, n in counts.items():
            result.non_numeric_units[str(unit)] = result.non_numeric_units.get(str(unit), 0) + int(
                n
            )
        result.messages.append(f"{int(bad_value.sum())} non-numeric or non-finite values skipped")
    if (no_accn & ~bad_value).any():
        result.skipped_cells += int((no_accn & ~bad_value).sum())
        result.messages.append(f"{int((no_accn & ~bad_value).sum())} facts without accn skipped")
    keep = ~bad_value & ~no_accn
    filings = _filings(cols, keep)
    frame = frame.loc[keep].sort_values(
        ["accn", "concept", "unit", "end", "start"], kind="stable", na_position="first"
    )
    facts, result.duplicate_facts = drop_duplicate_facts(
        frame[["accn", "concept", "unit", "value"]].reset_index(drop=True)
    )
    facts["value"] = facts["value"].astype("float64")
    result.facts = facts
    result.filings = filings


def _filings(cols: dict[str, list], keep: np.ndarray) -> pd.DataFrame:
    """One row per accn with its form, fy, fp, filed (first fact of that accn)."""
    idx = np.flatnonzero(keep)
    table = pa.table(
        {name: pa.array(_as_text(cols[name]).take(idx)) for name in ("accn", "form", "fp", "filed")}
    )
    table = table.append_column("fy", fy_column(_as_text(cols["fy"]).take(idx)))
    frame = table.to_pandas().drop_duplicates(subset=["accn"], keep="first")
    frame["fy"] = frame["fy"].astype("Int64")
    return frame[["accn", "form", "fy", "fp", "filed"]].sort_values("accn").reset_index(drop=True)
