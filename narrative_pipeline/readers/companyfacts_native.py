"""The native companyfacts scanner's Python side: one document's bytes -> the fast path's
FactColumns, without a Python object per fact.

Why: any parser that builds a dict per fact entry (orjson, json) caps whole-SEC ingestion near
600k entries/s per core before anything else is done. `_companyfacts_scan` (C, built at install
time as an optional extension; see its header comment) walks the bytes once and returns the
facts as columns, and the dicts above them (namespaces, concepts, units) with each fact list as
a `range` of rows, which companyfacts.py walks with its own code (taxonomy, messages). The
columns then go through the same `fill` as the Arrow fast path: one implementation of the
dedup, filings and counts.

The scanner declines (returns None) whatever it does not read exactly as orjson would; the
document is then parsed as before. Without the built module, or with
NARRATIVE_COMPANYFACTS_NATIVE=0, every document is parsed as before; a log line says which
path is active.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import orjson

from narrative_pipeline.readers.base import ReadResult
from narrative_pipeline.readers.companyfacts_fast import (
    FactColumns,
    Labels,
    NotFastPathable,
    TextCodes,
    UnitList,
    fill,
    list_codes,
    vocabulary,
)

log = logging.getLogger(__name__)
ENV = "NARRATIVE_COMPANYFACTS_NATIVE"
MODULE = "narrative_pipeline.readers._companyfacts_scan"  # by name: the .so is no .py file
_state: dict[str, ModuleType | None] = {}


def _load() -> ModuleType | None:
    try:
        module = importlib.import_module(MODULE)
    except ImportError as exc:
        log.info("companyfacts reader: pure-Python path (native scanner not built: %s)", exc)
        return None
    log.info("companyfacts reader: native scanner active (%s=0 turns it off)", ENV)
    return module


def scanner() -> ModuleType | None:
    """The native module, or None when it is not built or turned off (logged once)."""
    if os.environ.get(ENV, "1").strip() == "0":
        if "off" not in _state:
            _state["off"] = None
            log.info("companyfacts reader: pure-Python path (%s=0)", ENV)
        return None
    if "module" not in _state:
        _state["module"] = _load()
    return _state["module"]


@dataclass(frozen=True)
class Scanned:
    """One scanned document: `facts` mirrors the document's `facts` object (fact lists as
    ranges of rows); per row: val, accn/end/start/concept/unit (as written) codes, the fact
    object's byte span. `plain`: no key was repeated above the facts, so every row is in
    exactly one of the ranges, in row order."""

    data: bytes
    facts: dict
    values: np.ndarray
    accn: TextCodes
    end: TextCodes
    start: TextCodes
    concept: TextCodes
    unit: TextCodes
    spans: np.ndarray  # (rows, 2) int64: first byte, one past the last
    plain: bool

    def fact_objects(self, rows: np.ndarray) -> list:
        """The fact objects at these rows, parsed by orjson from their bytes (the filing
        fields then mean exactly what they mean on the parsed document)."""
        parts = [self.data[a:b] for a, b in self.spans[rows].tolist()]
        try:
            return orjson.loads(b"[" + b",".join(parts) + b"]")
        except orjson.JSONDecodeError as exc:  # the scanner accepted what orjson refuses
            raise NotFastPathable(str(exc)) from exc


def scan(data: bytes) -> Scanned | None:
    """The scanned document, or None (no native module, or a document it does not handle)."""
    module = scanner()
    out = module.scan(data) if module is not None else None
    if out is None:
        return None
    facts, values, *texts, spans, plain = out
    accn, end, start, concept, unit = (
        TextCodes(np.frombuffer(c, np.int32), t)
        for c, t in zip(texts[::2], texts[1::2], strict=True)
    )
    return Scanned(
        data,
        facts,
        np.frombuffer(values, np.float64),
        accn,
        end,
        start,
        concept,
        unit,
        np.frombuffer(spans, np.int64).reshape(-1, 2),
        plain,
    )


def native_frames(
    scanned: Scanned, lists: Sequence[UnitList], taxonomy: set[str] | None, result: ReadResult
) -> bool:
    """Fill result from the scanned columns (the rows of the fact lists `lists` names, which
    companyfacts.py's `_unit_lists` chose with `taxonomy`; empty and unused when the document
    is plain), as the fast path fills it from parsed dicts; False (result to be dropped) if
    not possible."""
    columns = _plain_columns(scanned, taxonomy) if scanned.plain else _listed(scanned, lists)
    try:
        fill(result, columns)
    except NotFastPathable:
        return False
    return True


def _listed(scanned: Scanned, lists: Sequence[UnitList]) -> FactColumns:
    """The rows of the ranges in `lists`, in that order (a key was repeated: the dicts hold
    only the last of its values, as orjson's)."""
    taken = [(c, u, rows) for c, u, rows in lists if isinstance(rows, range)]
    index = _rows([r.start for _, _, r in taken], [len(r) for _, _, r in taken])
    return _columns(scanned, index, list_codes([(c, u, len(r)) for c, u, r in taken]))


def _plain_columns(scanned: Scanned, taxonomy: set[str] | None) -> FactColumns:
    """Every row whose concept `taxonomy` takes: in a plain document those are the rows of the
    ranges `_unit_lists` returns, in order, without a Python step per fact list."""
    concept_rank, concepts = vocabulary(scanned.concept.texts, str)
    unit_rank, units = vocabulary(scanned.unit.texts, lambda unit: unit.upper().strip())
    index = np.arange(len(scanned.values))
    if taxonomy is not None:
        taken = [c in taxonomy for c in scanned.concept.texts]
        index = np.flatnonzero(np.asarray(taken, dtype=bool)[scanned.concept.codes])
    codes = concept_rank[scanned.concept.codes[index]], unit_rank[scanned.unit.codes[index]]
    return _columns(scanned, index, Labels(*codes, concepts, units))


def _columns(scanned: Scanned, index: np.ndarray, labels: Labels) -> FactColumns:
    """The FactColumns of these rows (their concepts and units given)."""
    accn, end, start = (
        TextCodes(field.codes[index], field.texts)
        for field in (scanned.accn, scanned.end, scanned.start)
    )
    objects = lambda rows: scanned.fact_objects(index[rows])  # noqa: E731
    return FactColumns(scanned.values[index], accn, end, start, labels, objects)


def _rows(starts: list[int], lengths: list[int]) -> np.ndarray:
    """The row numbers of the lists starting at `starts` with `lengths` rows, concatenated."""
    counts = np.asarray(lengths, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(counts) - counts), counts)
    return np.arange(int(counts.sum()), dtype=np.int64) + offsets
