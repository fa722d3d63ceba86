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
    NotFastPathable,
    TextCodes,
    UnitList,
    fill,
    list_codes,
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
    ranges of rows); per row: val, accn/end/start codes, the fact object's byte span."""

    data: bytes
    facts: dict
    values: np.ndarray
    accn: TextCodes
    end: TextCodes
    start: TextCodes
    spans: np.ndarray  # (rows, 2) int64: first byte, one past the last

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
    facts, values, accn, accn_texts, end, end_texts, start, start_texts, spans = out
    return Scanned(
        data,
        facts,
        np.frombuffer(values, np.float64),
        TextCodes(np.frombuffer(accn, np.int32), accn_texts),
        TextCodes(np.frombuffer(end, np.int32), end_texts),
        TextCodes(np.frombuffer(start, np.int32), start_texts),
        np.frombuffer(spans, np.int64).reshape(-1, 2),
    )


def native_frames(scanned: Scanned, lists: Sequence[UnitList], result: ReadResult) -> bool:
    """Fill result from the scanned columns (the fact lists `lists` names, in its order), as
    the fast path fills it from parsed dicts; False (result to be dropped) if not possible."""
    taken = [(c, u, rows) for c, u, rows in lists if isinstance(rows, range)]
    index = _rows([r.start for _, _, r in taken], [len(r) for _, _, r in taken])
    columns = FactColumns(
        scanned.values[index],
        *(TextCodes(t.codes[index], t.texts) for t in (scanned.accn, scanned.end, scanned.start)),
        *list_codes([(c, u, len(r)) for c, u, r in taken]),
        fact_objects=lambda rows: scanned.fact_objects(index[rows]),
    )
    try:
        fill(result, columns)
    except NotFastPathable:
        return False
    return True


def _rows(starts: list[int], lengths: list[int]) -> np.ndarray:
    """The row numbers of the lists starting at `starts` with `lengths` rows, concatenated."""
    counts = np.asarray(lengths, dtype=np.int64)
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(counts) - counts), counts)
    return np.arange(int(counts.sum()), dtype=np.int64) + offsets
