"""The fast path of the companyfacts reader: a parsed document's (concept, unit) fact lists ->
facts and filings frames without a Python object per fact.

Whole-SEC ingestion was bound by the reader (~48k entries/s in pure Python: one comprehension
per field per entry, then a pandas sort). Here every fact list is appended to ONE list of the
parsed dicts, which Arrow converts to a struct column in C++ (`accn`, `end`, `start`, `val`);
concepts and units become integer codes ranked by their text, so the sort that picks one fact
per (accn, concept, unit) is one stable sort over integers, and each filing's fields (form, fy,
fp, filed: only the first fact of each accn is looked at) are read from its dict.

The columns reach `fill` as FactColumns, from the parsed dicts here or from the native
scanner (companyfacts_native.py): one implementation of the dedup, filings and counts. `fill`
gives the database writer's batch (base.FactColumns) directly: a ColumnsResult holds it and
builds the facts/filings frames only when something reads them (a bulk ingest does not).

Identical results to the reference path (companyfacts.py `_reference_frames`) or no result:
`fast_frames` returns False, and the caller uses the reference, whenever a document holds
something whose meaning Arrow's conversion would change: a fact that is not an object, a
non-string accn/end/start, a non-numeric `val` (text, an integer past 2**53) or a boolean one.
Tests compare both paths on the real files and on generated odd documents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from narrative_pipeline.core.columns import filing_fields
from narrative_pipeline.readers.base import FactColumns as Batch
from narrative_pipeline.readers.base import ReadResult, empty_facts, empty_filings, fy_column

FACT_TYPE = pa.struct(
    [("accn", pa.string()), ("end", pa.string()), ("start", pa.string()), ("val", pa.float64())]
)
FILING_FIELDS = ("form", "fp", "filed")
UnitList = tuple[str, str, Any]  # (concept, unit as written, the list of fact objects)
_UNSET: Any = object()  # ColumnsResult.__init__: a frame not given (built when read)


class NotFastPathable(Exception):
    """The document holds a value the fast path would read differently: use the reference."""


@dataclass(frozen=True)
class TextCodes:
    """A text field of every fact: `codes[i]` indexes `texts` (-1: null or absent)."""

    codes: np.ndarray
    texts: list[str]

    def ranks(self) -> np.ndarray:
        """Each fact's rank of its text in text order (equal texts equal ranks; null -> -1,
        which sorts first, as the reference's `na_position="first"`)."""
        return np.append(_ranks(self.texts), -1)[self.codes]  # code -1 -> the appended -1


@dataclass(frozen=True)
class Labels:
    """Each fact's concept and unit as ranks into the texts in rank (text) order."""

    concept_codes: np.ndarray  # rank of the fact's concept in `concepts`
    unit_codes: np.ndarray  # rank of the fact's unit (upper-cased, stripped) in `units`
    concepts: np.ndarray
    units: np.ndarray


@dataclass(frozen=True)
class FactColumns:
    """The facts of one document as columns: what `fill` turns into frames. Built from the
    parsed dicts (`fast_frames`) or by the native scanner (companyfacts_native.py)."""

    values: np.ndarray  # float64, NaN when absent
    accn: TextCodes
    end: TextCodes
    start: TextCodes
    labels: Labels
    fact_objects: Callable[[np.ndarray], list]  # the parsed fact objects at these rows


def fast_frames(lists: Sequence[UnitList], result: ReadResult) -> bool:
    """Fill result.facts/filings (and the skipped counts) from the fact lists, or return False
    (result untouched) when the reference path must read this document."""
    items: list = []
    taken: list[tuple[str, str, int]] = []
    for concept, unit, facts in lists:
        if isinstance(facts, list):  # the reference reads a non-list as no facts
            items.extend(facts)
            taken.append((concept, unit, len(facts)))
    try:
        column = _struct(items)
        values = _values(items, column)
    except NotFastPathable:
        return False
    accn, end, start = (_text_codes(column.field(name)) for name in ("accn", "end", "start"))
    objects = lambda rows: [items[i] for i in rows]  # noqa: E731
    fill(result, FactColumns(values, accn, end, start, list_codes(taken), objects))
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


def list_codes(taken: Sequence[tuple[str, str, int]]) -> Labels:
    """Per fact of the (concept, unit as written, number of facts) lists, in order: concept
    and unit ranks, and the concepts and units (upper-cased, stripped) in rank order."""
    concept_ids: dict[str, int] = {}
    unit_ids: dict[str, int] = {}
    list_concepts: list[int] = []
    list_units: list[int] = []
    for concept, unit, _ in taken:
        list_concepts.append(concept_ids.setdefault(concept, len(concept_ids)))
        key = unit.upper().strip()
        list_units.append(unit_ids.setdefault(key, len(unit_ids)))
    concept_rank, concepts = _ranked(concept_ids)
    unit_rank, units = _ranked(unit_ids)
    counts = np.fromiter((n for _, _, n in taken), dtype=np.int64, count=len(taken))
    concept_codes = np.repeat(concept_rank[np.asarray(list_concepts, dtype=np.int64)], counts)
    unit_codes = np.repeat(unit_rank[np.asarray(list_units, dtype=np.int64)], counts)
    return Labels(
        concept_codes, unit_codes, concepts[np.argsort(concept_rank)], units[np.argsort(unit_rank)]
    )


def vocabulary(texts: list[str], normalise: Callable[[str], str]) -> tuple[np.ndarray, np.ndarray]:
    """For distinct texts: each one's rank among the distinct normalised texts, and those in
    rank order (what `list_codes` gives, per text rather than per fact list)."""
    if normalise is str and len(set(texts)) == len(texts):  # each its own id: no Python loop
        rank = _ranks(texts)
        return rank, np.array(texts, dtype=object)[np.argsort(rank)]
    ids: dict[str, int] = {}
    text_ids = np.fromiter(
        (ids.setdefault(normalise(t), len(ids)) for t in texts), dtype=np.int64, count=len(texts)
    )
    rank, names = _ranked(ids)
    return rank[text_ids], names[np.argsort(rank)]


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


def _text_codes(column: pa.Array) -> TextCodes:
    """An Arrow text column as codes into its distinct texts."""
    encoded = column.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return TextCodes(codes, encoded.dictionary.to_pylist())


def fill(result: ReadResult, columns: FactColumns) -> None:
    """Skipped counts, one fact per (accn, concept, unit) (latest end, then start, then the
    last listed), and the filings, as the reference computes them: into `result` as the
    writer's batch (a ColumnsResult builds its frames only when asked), else as frames."""
    bad_value = ~np.isfinite(columns.values)
    no_accn = columns.accn.codes < 0
    labels = columns.labels
    _count_skipped(result, bad_value, no_accn, labels.units, labels.unit_codes)
    kept = np.flatnonzero(~bad_value & ~no_accn)
    accn_codes = columns.accn.ranks()[kept]
    end = columns.end.ranks()[kept]
    start = columns.start.ranks()[kept]
    c, u = labels.concept_codes[kept], labels.unit_codes[kept]
    order = _sort_order([accn_codes, c, u, end, start])  # stable: ties keep document order
    g_accn, g_c, g_u = accn_codes[order], c[order], u[order]
    new_accn = np.ones(len(order), dtype=bool)
    new_accn[1:] = g_accn[1:] != g_accn[:-1]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = new_accn[1:] | (g_c[1:] != g_c[:-1]) | (g_u[1:] != g_u[:-1])
    rows = kept[order[last]]
    filings = _filings(columns, kept[_first_of_groups(order, new_accn)])  # first: it may raise
    concept_code, concepts = _first_seen(labels.concept_codes[rows], labels.concepts)
    unit_code, units = _first_seen(labels.unit_codes[rows], labels.units)
    batch = Batch(
        [result.source],
        [result.ticker],
        [filings],
        np.zeros(len(rows), dtype=np.int64),
        (np.cumsum(new_accn) - 1)[last],  # each fact's filing: its accn's place in order
        concepts,
        concept_code,
        units,
        unit_code,
        columns.values[rows],
    )
    result.duplicate_facts = int(len(order) - len(rows))
    if isinstance(result, ColumnsResult):
        result.attach(batch)
    else:
        result.facts, result.filings = batch_frames(batch)


def _first_seen(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes renumbered by first appearance and their names: what `pd.factorize` of the
    names gives (base.fact_columns_from_result on the frame), as names and codes are 1:1."""
    new_codes, uniques = pd.factorize(codes)
    return new_codes.astype(np.int64), [str(n) for n in names[uniques].tolist()]


def batch_frames(batch: Batch) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One ticker's batch as the reader's (facts, filings) frames (text columns, fy Int64)."""
    rows = batch.filings[0]
    accns = [r[0] for r in rows]
    facts = pd.DataFrame(
        {
            "accn": _texts(accns, batch.filing_index),
            "concept": _texts(batch.concepts, batch.concept_code),
            "unit": _texts(batch.units, batch.unit_code),
            "value": batch.values,
        },
        copy=False,
    )
    filings = pd.DataFrame(
        {
            "accn": _texts(accns, np.arange(len(accns))),
            "form": _as_text([r[1] for r in rows]).to_pandas(),
            "fy": pd.Series(pd.array([r[2] for r in rows], dtype="Int64")),
            "fp": _as_text([r[3] for r in rows]).to_pandas(),
            "filed": _as_text([r[4] for r in rows]).to_pandas(),
        },
        copy=False,
    )
    return facts, filings


class ColumnsResult(ReadResult):
    """A ReadResult that holds the writer's batch (base.FactColumns) and builds its facts and
    filings frames only when they are read. Why: per document, the frames cost about as much
    as the native scan, and a bulk ingest never reads them (the writer takes `fact_columns()`,
    which no longer factorizes the frames' strings back into codes). Pickles without frames.
    Assigning a frame after `attach` makes that frame authoritative (and the batch unused)."""

    batch: Batch | None = None

    def __init__(self, source: str, ticker: str, **fields: Any) -> None:
        """ReadResult's fields, without building its two empty frames up front (~0.4 ms, a
        tenth of reading a typical member): a frame never assigned is built when read, from
        the batch once attached, else empty."""
        fields.setdefault("filings", _UNSET)
        fields.setdefault("facts", _UNSET)
        super().__init__(source, ticker, **fields)

    def attach(self, batch: Batch) -> None:
        """Hold `batch`; the frames are derived from it from now on."""
        state = self.__dict__
        state["batch"], state["_changed"] = batch, False
        state.pop("_facts", None)
        state.pop("_filings", None)

    def _frame(self, name: str) -> pd.DataFrame:
        state, batch = self.__dict__, self.batch
        if name in state:
            return state[name]
        if batch is None:  # nothing read (yet): empty frames
            state[name] = empty_facts() if name == "_facts" else empty_filings()
        else:
            facts, filings = batch_frames(batch)
            state.setdefault("_facts", facts)
            state.setdefault("_filings", filings)
        return state[name]

    def _set(self, name: str, frame: pd.DataFrame) -> None:
        if frame is _UNSET:  # __init__: built when read
            return
        self.__dict__[name] = frame
        self.__dict__["_changed"] = True

    @property  # type: ignore[override]
    def facts(self) -> pd.DataFrame:
        return self._frame("_facts")

    @facts.setter
    def facts(self, frame: pd.DataFrame) -> None:
        self._set("_facts", frame)

    @property  # type: ignore[override]
    def filings(self) -> pd.DataFrame:
        return self._frame("_filings")

    @filings.setter
    def filings(self, frame: pd.DataFrame) -> None:
        self._set("_filings", frame)

    def _current_batch(self) -> Batch | None:
        """The batch, unless a frame was assigned since `attach` (then the frames rule)."""
        return None if self.__dict__.get("_changed", True) else self.batch

    @property
    def fact_count(self) -> int:
        batch = self._current_batch()
        return len(batch.values) if batch is not None else len(self.facts)

    def fact_columns(self) -> Batch:
        """The batch as read (no frame built, nothing factorized), else from the frames."""
        batch = self._current_batch()
        if batch is not None:
            return batch
        return super().fact_columns()


def failed_result(source: str, ticker: str, error: str) -> ColumnsResult:
    """base.failed's result (no data, the reason in `error` and `messages`) without building
    its empty frames up front: about a tenth of the bulk archive's members hold no usable
    filing, and the frames cost more than reading such a member."""
    return ColumnsResult(source, ticker, error=error, messages=[error])


def _sort_order(keys: list[np.ndarray]) -> np.ndarray:
    """The stable order by these integer keys (the first most significant; each >= -1).
    When the keys' ranges and the row count multiply below 2**62, each row's combined key
    with its position as the least significant part is unique, so an unstable sort of those
    numbers (SIMD quicksort: ~5x a stable argsort, ~20x np.lexsort) gives the stable order in
    their low part; else np.lexsort."""
    n = len(keys[0])
    sizes = [int(k.max()) + 2 if n else 1 for k in keys]  # values -1..max -> 0..max+1
    if not n or math.prod(sizes) * n >= 2**62:
        return np.lexsort(keys[::-1])
    combined = np.zeros(n, dtype=np.int64)
    for key, size in zip(keys, sizes, strict=True):
        combined *= size
        combined += key + 1
    combined *= n
    combined += np.arange(n, dtype=np.int64)
    return np.sort(combined) % n


def _texts(vocabulary: Sequence | np.ndarray, codes: np.ndarray) -> pd.Series:
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


def _fiscal_years(values: list) -> list[int | None]:
    """`fy` as the reference reads it (text, then an integer of at most 9 digits, else null):
    plain ints directly, anything else through the reference's `fy_column`."""
    if all(type(v) is int or v is None for v in values):
        return [v if v is not None and -1_000_000_000 < v < 1_000_000_000 else None for v in values]
    return fy_column(_as_text(values)).to_pylist()


def _first_of_groups(order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per group of the sorted rows (`starts` flags each group's first), the smallest of their
    `order` (document) positions: the group's first row in document order."""
    if not len(order):
        return order
    return np.minimum.reduceat(order, np.flatnonzero(starts))


def _filings(columns: FactColumns, rows: np.ndarray) -> list[tuple]:
    """One FILING_COLUMNS row per accn, from the fact at each of `rows` (the first kept fact
    of each accn, in accn order): its form, fy, fp, filed; the rest None."""
    facts = columns.fact_objects(rows)
    texts = columns.accn.texts
    accns = [texts[code] for code in columns.accn.codes[rows].tolist()]  # kept: all have one
    fields = {name: _as_text([f.get(name) for f in facts]).to_pylist() for name in FILING_FIELDS}
    years = _fiscal_years([f.get("fy") for f in facts])
    rest = zip(fields["form"], years, fields["fp"], fields["filed"], strict=True)
    return [
        (accn, *filing_fields([*r, None, None, None])) for accn, r in zip(accns, rest, strict=True)
    ]
