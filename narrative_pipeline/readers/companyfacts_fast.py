"""The fast path of the companyfacts reader: a parsed document's (concept, unit) fact lists ->
facts and filings frames without a Python object per fact.

Whole-SEC ingestion was bound by the reader (~48k entries/s in pure Python: one comprehension
per field per entry, then a pandas sort). Here every fact list is appended to ONE list of the
parsed dicts, which Arrow converts to a struct column in C++ (`accn`, `end`, `start`, `val`);
concepts and units become integer codes ranked by their text, so the sort that picks one fact
per (accn, concept, unit) is one `np.lexsort` over integers, and each filing's fields (form, fy,
fp, filed: only the first fact of each accn is looked at) are read from its dict.

Identical results to the reference path (companyfacts.py `_reference_frames`) or no result:
`fast_frames` returns False, and the caller uses the reference, whenever a document holds
something whose meaning Arrow's conversion would change: a fact that is not an object, a
non-string accn/end/start, a non-numeric `val` (text, an integer past 2**53) or a boolean one.
Tests compare both paths on the real files and on generated odd documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from narrative_pipeline.readers.base import ReadResult, fy_column

FACT_TYPE = pa.struct(
    [("accn", pa.string()), ("end", pa.string()), ("start", pa.string()), ("val", pa.float64())]
)
FILING_FIELDS = ("form", "fp", "filed")
UnitList = tuple[str, str, Any]  # (concept, unit as written, the list of fact objects)


class NotFastPathable(Exception):
    """The document holds a value the fast path would read differently: use the reference."""


def fast_frames(lists: Sequence[UnitList], result: ReadResult) -> bool:
    """Fill result.facts/filings (and the skipped counts) from the fact lists, or return False
    (result untouched) when the reference path must read this document."""
    items, concept_codes, unit_codes, concepts, units = _flatten(lists)
    try:
        column = _struct(items)
        values = _values(items, column)
    except NotFastPathable:
        return False
    _fill(result, items, column, values, concept_codes, unit_codes, concepts, units)
    return True


def _ranks(texts: list) -> np.ndarray:
    """Each text's rank in Python's string order (sorted() on the few distinct values: exact
    code-point order, as pandas sorts)."""
    rank = np.empty(len(texts), dtype=np.int64)
    rank[sorted(range(len(texts)), key=texts.__getitem__)] = np.arange(len(texts))
    return rank


def _ranked(vocabulary: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each code in text order, the texts by code) for a {text: code} vocabulary."""
    texts = list(vocabulary)
    return _ranks(texts), np.array(texts, dtype=object)


def _flatten(
    lists: Sequence[UnitList],
) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All fact dicts in document order, one struct column, and per-fact concept/unit ranks."""
    items: list = []
    concept_ids: dict[str, int] = {}
    unit_ids: dict[str, int] = {}
    lengths: list[int] = []
    list_concepts: list[int] = []
    list_units: list[int] = []
    for concept, unit, facts in lists:
        if not isinstance(facts, list):
            continue  # the reference reads a non-list as no facts
        items.extend(facts)
        lengths.append(len(facts))
        list_concepts.append(concept_ids.setdefault(concept, len(concept_ids)))
        unit_ids.setdefault(unit.upper().strip(), len(unit_ids))
        list_units.append(unit_ids[unit.upper().strip()])
    concept_rank, concepts = _ranked(concept_ids)
    unit_rank, units = _ranked(unit_ids)
    counts = np.asarray(lengths, dtype=np.int64)
    concept_codes = np.repeat(concept_rank[np.asarray(list_concepts, dtype=np.int64)], counts)
    unit_codes = np.repeat(unit_rank[np.asarray(list_units, dtype=np.int64)], counts)
    by_rank = np.argsort(concept_rank), np.argsort(unit_rank)
    return items, concept_codes, unit_codes, concepts[by_rank[0]], units[by_rank[1]]


def _struct(items: list) -> pa.StructArray:
    """The facts as one Arrow struct column (C++ conversion), or NotFastPathable."""
    try:
        column = pa.array(items, FACT_TYPE)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise NotFastPathable(str(exc)) from exc
    if column.null_count:  # a null fact object: the reference drops it (a non-dict)
        raise NotFastPathable("null fact")
    return column


def _values(items: list, column: pa.StructArray) -> np.ndarray:
    """`val` as float64 (NaN when absent); a boolean `val` (Arrow reads True as 1.0, pandas
    differently) sends the document to the reference path."""
    values = column.field("val").to_numpy(zero_copy_only=False)
    for i in np.flatnonzero((values == 0.0) | (values == 1.0)):
        if isinstance(items[i].get("val"), bool):
            raise NotFastPathable("boolean val")
    return values


def _text_codes(column: pa.Array) -> np.ndarray:
    """Each string's rank in text order (equal strings equal codes); null -> -1 (sorts first)."""
    encoded = column.dictionary_encode()
    rank = np.append(_ranks(encoded.dictionary.to_pylist()), -1)  # index -1 (null) -> -1
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return rank[indices]


def _fill(
    result: ReadResult,
    items: list,
    column: pa.StructArray,
    values: np.ndarray,
    concept_codes: np.ndarray,
    unit_codes: np.ndarray,
    concepts: np.ndarray,
    units: np.ndarray,
) -> None:
    """Skipped counts, one fact per (accn, concept, unit) (latest end, then start, then the
    last listed), and the filings, as the reference computes them."""
    bad_value = ~np.isfinite(values)
    no_accn = column.field("accn").is_null().to_numpy(zero_copy_only=False)
    _count_skipped(result, bad_value, no_accn, units, unit_codes)
    kept = np.flatnonzero(~bad_value & ~no_accn)
    accn = column.field("accn").take(kept)
    accn_codes = _text_codes(accn)
    end = _text_codes(column.field("end").take(kept))
    start = _text_codes(column.field("start").take(kept))
    c, u = concept_codes[kept], unit_codes[kept]
    order = np.lexsort((start, end, u, c, accn_codes))  # stable: ties keep document order
    g_accn, g_c, g_u = accn_codes[order], c[order], u[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (g_accn[1:] != g_accn[:-1]) | (g_c[1:] != g_c[:-1]) | (g_u[1:] != g_u[:-1])
    rows = order[last]
    result.facts = pd.DataFrame(
        {
            "accn": accn.take(rows).to_pandas(),
            "concept": _texts(concepts, c[rows]),
            "unit": _texts(units, u[rows]),
            "value": values[kept[rows]],
        },
        copy=False,
    )
    result.duplicate_facts = int(len(order) - len(rows))
    result.filings = _filings(items, accn, accn_codes, kept)


def _texts(vocabulary: np.ndarray, codes: np.ndarray) -> pd.Series:
    """vocabulary[codes] as a pandas text Series (via Arrow: no Python object per row)."""
    return pa.array(vocabulary, pa.string()).take(codes).to_pandas()


def _count_skipped(
    result: ReadResult,
    bad_value: np.ndarray,
    no_accn: np.ndarray,
    units: np.ndarray,
    unit_codes: np.ndarray,
) -> None:
    """The reference's counts and messages for non-numeric values and facts without accn."""
    if bad_value.any():
        result.skipped_cells += int(bad_value.sum())
        counts = pd.Series(units[unit_codes[bad_value]], dtype="str").value_counts()
        for unit, n in counts.items():
            key = str(unit)
            result.non_numeric_units[key] = result.non_numeric_units.get(key, 0) + int(n)
        result.messages.append(f"{int(bad_value.sum())} non-numeric or non-finite values skipped")
    without = int((no_accn & ~bad_value).sum())
    if without:
        result.skipped_cells += without
        result.messages.append(f"{without} facts without accn skipped")


def _as_text(values: list) -> pa.Array:
    """Strings as Arrow text; other types via str() (the reference's rule)."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _fiscal_years(values: list) -> pd.Series:
    """`fy` as the reference reads it (text, then an integer of at most 9 digits, else null):
    plain ints directly, anything else through the reference's `fy_column`."""
    if all(type(v) is int or v is None for v in values):
        years = [
            v if v is not None and -1_000_000_000 < v < 1_000_000_000 else None for v in values
        ]
        return pd.Series(pd.array(years, dtype="Int64"))
    return pd.Series(fy_column(_as_text(values)).to_pandas()).astype("Int64")


def _filings(items: list, accn: pa.Array, accn_codes: np.ndarray, kept: np.ndarray) -> pd.DataFrame:
    """One row per accn (its first kept fact's form, fy, fp, filed), sorted by accn."""
    _, first = np.unique(accn_codes, return_index=True)  # unique codes ascend: accn order
    facts = [items[i] for i in kept[first]]
    columns = {name: _as_text([f.get(name) for f in facts]).to_pandas() for name in FILING_FIELDS}
    return pd.DataFrame(
        {
            "accn": accn.take(first).to_pandas(),
            "form": columns["form"],
            "fy": _fiscal_years([f.get("fy") for f in facts]),
            "fp": columns["fp"],
            "filed": columns["filed"],
        },
        copy=False,
    )
