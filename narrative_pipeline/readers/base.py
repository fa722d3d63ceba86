"""ReadResult and the vectorised `VALUE::UNIT` cell parsing shared by the readers.

Readers turn one source file into a ReadResult and never raise for bad content: a file that
cannot be used gets `error` set (and empty frames), everything else is reported as counts and
per-file messages, so one bad file never stops an ingestion run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from narrative_pipeline.core.columns import (  # noqa: F401 (FACT_COLUMNS re-exported)
    FACT_COLUMNS,
    FILING_COLUMNS,
    filing_fields,
)

# A plain decimal or scientific number; anything else (NaN, inf, "1,000", "abc") is non-numeric.
NUMBER_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
EXAMPLES_PER_MESSAGE = 3
UNIT_SEPARATOR = "::"


def _empty_filings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "accn": pd.Series([], dtype="str"),
            "form": pd.Series([], dtype="str"),
            "fy": pd.Series([], dtype="Int64"),
            "fp": pd.Series([], dtype="str"),
            "filed": pd.Series([], dtype="str"),
            "period_end": pd.Series([], dtype="str"),
            "is_amendment": pd.Series([], dtype="boolean"),
            "filing_url": pd.Series([], dtype="str"),
        }
    )


def _empty_facts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "accn": pd.Series([], dtype="str"),
            "concept": pd.Series([], dtype="str"),
            "unit": pd.Series([], dtype="str"),
            "value": pd.Series([], dtype="float64"),
        }
    )


_EMPTY_FILINGS = _empty_filings()
_EMPTY_FACTS = _empty_facts()


def empty_filings() -> pd.DataFrame:
    """A filings frame with no rows and the contract's columns and dtypes (a shallow copy:
    building a DataFrame costs ~1 ms, too much per small file; with pandas' copy-on-write a
    change to the copy never reaches the template)."""
    return _EMPTY_FILINGS.copy(deep=False)


def empty_facts() -> pd.DataFrame:
    """A facts frame with no rows and the contract's columns and dtypes."""
    return _EMPTY_FACTS.copy(deep=False)


@dataclass
class ReadResult:
    """One ticker's filings and numeric facts read from one source, plus what was skipped."""

    source: str
    ticker: str
    filings: pd.DataFrame = field(default_factory=empty_filings)
    facts: pd.DataFrame = field(default_factory=empty_facts)
    skipped_cells: int = 0
    non_numeric_units: dict[str, int] = field(default_factory=dict)
    skipped_columns: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    error: str | None = None
    # False when no taxonomy was given: every concept was taken, balance/period types unknown.
    taxonomy_applied: bool = True
    duplicate_facts: int = 0  # (accn, concept, unit) repeats dropped (the kept one is documented)

    @property
    def fact_count(self) -> int:
        return len(self.facts)

    def fact_columns(self) -> FactColumns:
        """This result as the database's write batch (`fact_columns_from_result`)."""
        return fact_columns_from_result(self)


@dataclass
class FileReport:
    """A ReadResult's report fields without its frames: what a batch keeps per file (the
    facts go to FactColumns), cheap to build, pickle and send between processes."""

    source: str
    ticker: str
    error: str | None = None
    skipped_cells: int = 0
    non_numeric_units: dict[str, int] = field(default_factory=dict)
    skipped_columns: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    taxonomy_applied: bool = True
    duplicate_facts: int = 0

    @classmethod
    def of(cls, result: ReadResult | FileReport) -> FileReport:
        """The report fields of `result` (copied)."""
        return cls(
            result.source,
            result.ticker,
            result.error,
            int(result.skipped_cells),
            dict(result.non_numeric_units),
            list(result.skipped_columns),
            list(result.messages),
            result.taxonomy_applied,
            int(result.duplicate_facts),
        )

    def as_result(self) -> ReadResult:
        """A ReadResult with these fields and empty frames."""
        out = ReadResult(source=self.source, ticker=self.ticker)
        report = FileReport.of(self)
        out.error, out.skipped_cells = report.error, report.skipped_cells
        out.non_numeric_units, out.skipped_columns = (
            report.non_numeric_units,
            report.skipped_columns,
        )
        out.messages, out.taxonomy_applied = report.messages, report.taxonomy_applied
        out.duplicate_facts = report.duplicate_facts
        return out


def typed_filing_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """fy as Int64 and is_amendment as boolean, in place (filings are few); returns `frame`."""
    frame["fy"] = pd.array(frame["fy"].tolist(), dtype="Int64")
    if "is_amendment" in frame:
        frame["is_amendment"] = pd.array(frame["is_amendment"].tolist(), dtype="boolean")
    return frame


def failed(source: str, ticker: str, error: str) -> ReadResult:
    """A result for an unusable file: no data, the reason in `error` and in `messages`."""
    return ReadResult(source=source, ticker=ticker, error=error, messages=[error])


def no_usable_filing(result: ReadResult) -> str:
    """The error of a file that parsed but holds no filing with a numeric fact (held back: its
    empty result must never replace the ticker's stored data)."""
    reasons = [m for m in result.messages if "rows" in m and "skipped" in m]
    if not len(result.filings):
        reasons = reasons or ["header only"]
    else:
        reasons.append(f"{len(result.filings)} filings without any numeric fact")
    return "no usable filing (" + "; ".join(reasons) + "): file held back, stored data kept"


def fy_column(values: pa.Array) -> pa.Array:
    """Fiscal years as int64 (null where the text is not an integer)."""
    text = pc.utf8_trim_whitespace(values.cast(pa.string()))
    is_int = pc.fill_null(pc.match_substring_regex(text, r"^[+-]?\d{1,9}$"), False)
    return pc.if_else(is_int, pc.cast(pc.if_else(is_int, text, "0"), pa.int64()), None)


@dataclass
class ParsedCells:
    """Result of parsing `VALUE::UNIT` cells: the kept positions and their values and units."""

    keep: np.ndarray  # indices (into the input cells) of numeric, finite cells
    values: np.ndarray  # float64, one per kept cell
    units: pa.Array  # upper-cased unit strings, one per kept cell
    skipped_cells: int = 0
    non_numeric_units: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def _examples(cells: pa.Array, mask: pa.Array) -> str:
    sample = pc.filter(cells, mask).slice(0, EXAMPLES_PER_MESSAGE).to_pylist()
    return ", ".join(repr(s) for s in sample)


def _count_units(units: pa.Array) -> dict[str, int]:
    counts = pc.value_counts(units)
    return dict(
        zip(
            counts.field("values").to_pylist(),
            counts.field("counts").to_pylist(),
            strict=True,
        )
    )


def parse_value_unit_cells(cells: pa.Array) -> ParsedCells:
    """Split trimmed, non-empty `VALUE::UNIT` cells into float values and upper-cased units.

    Semantics of the original: values that are not numbers (including NaN) are skipped and
    their units counted as non-numeric units; additionally cells without `::` or with an empty
    unit, and values outside float64's range (inf), are skipped and counted, with a message.
    """
    cells = cells.cast(pa.string())
    n = len(cells)
    messages: list[str] = []
    skipped = 0
    has_sep = pc.greater_equal(pc.find_substring(cells, UNIT_SEPARATOR), 0)
    no_sep = int(n - pc.sum(has_sep).as_py()) if n else 0
    if no_sep:
        skipped += no_sep
        messages.append(
            f"{no_sep} cells without '::UNIT' skipped (e.g. {_examples(cells, pc.invert(has_sep))})"
        )
    positions = np.flatnonzero(has_sep.to_numpy(zero_copy_only=False)) if no_sep else np.arange(n)
    with_sep = pc.take(cells, positions) if no_sep else cells
    parts = pc.split_pattern(with_sep, UNIT_SEPARATOR, max_splits=1)
    value_text = pc.utf8_trim_whitespace(pc.list_element(parts, 0))
    units = pc.utf8_upper(pc.utf8_trim_whitespace(pc.list_element(parts, 1)))
    has_unit = pc.greater(pc.binary_length(units), 0)
    no_unit = int(len(units) - pc.sum(has_unit).as_py()) if len(units) else 0
    if no_unit:
        skipped += no_unit
        messages.append(
            f"{no_unit} cells with an empty unit skipped "
            f"(e.g. {_examples(with_sep, pc.invert(has_unit))})"
        )
    numeric = pc.match_substring_regex(value_text, NUMBER_PATTERN)
    non_numeric = pc.and_(has_unit, pc.invert(numeric))
    non_numeric_units: dict[str, int] = {}
    n_non_numeric = int(pc.sum(non_numeric).as_py() or 0)
    if n_non_numeric:
        skipped += n_non_numeric
        non_numeric_units = _count_units(pc.filter(units, non_numeric))
        messages.append(
            f"{n_non_numeric} non-numeric values skipped (e.g. {_examples(with_sep, non_numeric)})"
        )
    candidate = pc.and_(has_unit, numeric)
    cand_idx = np.flatnonzero(candidate.to_numpy(zero_copy_only=False))
    values = pc.cast(pc.take(value_text, cand_idx), pa.float64()).to_numpy(zero_copy_only=False)
    finite = np.isfinite(values)
    n_inf = int(len(values) - finite.sum())
    if n_inf:
        skipped += n_inf
        bad = pc.take(with_sep, cand_idx[~finite])
        messages.append(
            f"{n_inf} values outside the float64 range skipped "
            f"(e.g. {_examples(bad, pa.array(np.ones(len(bad), dtype=bool)))})"
        )
        cand_idx = cand_idx[finite]
        values = values[finite]
    return ParsedCells(
        keep=positions[cand_idx],
        values=values,
        units=pc.take(units, cand_idx),
        skipped_cells=skipped,
        non_numeric_units=non_numeric_units,
        messages=messages,
    )


def drop_duplicate_facts(facts: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the last row of each (accn, concept, unit); callers order rows so 'last' is the
    one to keep. Returns (facts, rows dropped)."""
    dup = facts.duplicated(subset=["accn", "concept", "unit"], keep="last").to_numpy()
    n = int(dup.sum())
    if not n:
        return facts, 0
    return facts.loc[~dup].reset_index(drop=True), n


_TICKER_SUFFIX = re.compile(r"([_.-]?companyfacts)?(\.json)?(\.gz)?$", re.IGNORECASE)


def ticker_from_name(name: str) -> str:
    """`AAPL.csv` -> `AAPL`, `AAPL_companyfacts.json.gz` -> `AAPL`, `CIK0000320193.json` ->
    `CIK0000320193`: the file name is the ticker, as sec-fetcher writes it."""
    stem = name.rsplit("/", 1)[-1]
    if stem.lower().endswith(".csv"):
        return stem[:-4]
    return _TICKER_SUFFIX.sub("", stem, count=1) or stem


@dataclass
class FactColumns:
    """Facts of several tickers as flat arrays: the batched write path (one DataFrame per file
    costs more than the database insert of its ~2k facts).

    `filings[t]` lists ticker t's filings as FILING_COLUMNS tuples; each fact points at
    one of them by (`ticker_index`, `filing_index`). Concept and unit are codes into the
    `concepts` and `units` lists (a name may appear more than once in those lists).
    """

    sources: list[str]
    tickers: list[str]
    filings: list[list[tuple]]
    ticker_index: np.ndarray  # int64 per fact
    filing_index: np.ndarray  # int64 per fact
    concepts: list[str]
    concept_code: np.ndarray  # int64 per fact
    units: list[str]
    unit_code: np.ndarray  # int64 per fact
    values: np.ndarray  # float64 per fact

    @property
    def fact_count(self) -> int:
        return len(self.values)

    def fact_counts(self) -> np.ndarray:
        """Facts per ticker, aligned with `tickers`."""
        return np.bincount(self.ticker_index, minlength=len(self.tickers))

    def select(self, keep: list[int]) -> FactColumns:
        """Only the tickers at positions `keep` (in that order)."""
        new_pos = np.full(len(self.tickers), -1, dtype=np.int64)
        new_pos[keep] = np.arange(len(keep))
        mask = new_pos[self.ticker_index] >= 0 if len(self.values) else np.zeros(0, bool)
        return FactColumns(
            [self.sources[i] for i in keep],
            [self.tickers[i] for i in keep],
            [self.filings[i] for i in keep],
            new_pos[self.ticker_index[mask]],
            self.filing_index[mask],
            self.concepts,
            self.concept_code[mask],
            self.units,
            self.unit_code[mask],
            self.values[mask],
        )

    def ticker_result(self, t: int, report: ReadResult | FileReport | None = None) -> ReadResult:
        """Ticker t as a ReadResult with its facts/filings frames (categorical columns, like
        the per-file reader); the counts and messages come from `report` when given."""
        result = ReadResult(source=self.sources[t], ticker=self.tickers[t])
        if report is not None:
            result.skipped_cells = report.skipped_cells
            result.non_numeric_units = dict(report.non_numeric_units)
            result.skipped_columns = list(report.skipped_columns)
            result.messages = list(report.messages)
            result.taxonomy_applied = report.taxonomy_applied
            result.duplicate_facts = report.duplicate_facts
        rows = self.filings[t]
        frame = pd.DataFrame(rows, columns=list(FILING_COLUMNS)) if rows else empty_filings()
        typed_filing_columns(frame)
        result.filings = frame
        sel = np.flatnonzero(self.ticker_index == t)
        accns = [r[0] for r in rows]
        result.facts = pd.DataFrame(
            {
                "accn": _codes_to_categorical(self.filing_index[sel], accns),
                "concept": _codes_to_categorical(self.concept_code[sel], self.concepts),
                "unit": _codes_to_categorical(self.unit_code[sel], self.units),
                "value": self.values[sel],
            }
        )
        return result


def _codes_to_categorical(codes: np.ndarray, names: list[str]) -> pd.Categorical:
    used = np.unique(codes)
    cats = [names[i] for i in used.tolist()]
    # Distinct names only (a batch's name list may repeat a name).
    uniq, first = np.unique(np.array(cats, dtype=object), return_inverse=True)
    pos = np.searchsorted(used, codes)
    return pd.Categorical.from_codes(first.reshape(-1)[pos], categories=list(uniq))


def concat_fact_columns(parts: list[FactColumns]) -> FactColumns:
    """One FactColumns holding the tickers of every part, in order."""
    parts = [p for p in parts if p.tickers]
    if len(parts) == 1:
        return parts[0]
    out = FactColumns(
        [],
        [],
        [],
        *(np.zeros(0, np.int64),) * 2,
        [],
        np.zeros(0, np.int64),
        [],
        np.zeros(0, np.int64),
        np.zeros(0, np.float64),
    )
    ti, fi, cc, uc, vv = [], [], [], [], []
    for p in parts:
        ti.append(p.ticker_index + len(out.tickers))
        fi.append(p.filing_index)
        cc.append(p.concept_code + len(out.concepts))
        uc.append(p.unit_code + len(out.units))
        vv.append(p.values)
        out.sources += p.sources
        out.tickers += p.tickers
        out.filings += p.filings
        out.concepts += p.concepts
        out.units += p.units
    if parts:
        out.ticker_index, out.filing_index = np.concatenate(ti), np.concatenate(fi)
        out.concept_code, out.unit_code = np.concatenate(cc), np.concatenate(uc)
        out.values = np.concatenate(vv)
    return out


def fact_columns_from_result(result: ReadResult) -> FactColumns:
    """One reader's ReadResult as FactColumns (one filing per accn, the last row wins; an accn
    used by facts but absent from filings gets an all-NULL filing, as `replace_ticker` does)."""
    records: dict[str, tuple] = {}
    filings = result.filings
    cols = [
        filings[n].to_numpy(dtype=object, na_value=None).tolist()
        if n in filings
        else [None] * len(filings)
        for n in FILING_COLUMNS
    ]
    for accn, *rest in zip(*cols, strict=True):
        if accn is not None and accn == accn:
            records[str(accn)] = filing_fields(rest)
    facts = result.facts
    accn_codes, accn_names = _factorize(facts["accn"])
    for accn in accn_names:
        records.setdefault(accn, (None,) * (len(FILING_COLUMNS) - 1))
    accns = list(records)
    position = {a: i for i, a in enumerate(accns)}
    remap = np.array([position[a] for a in accn_names] + [-1], dtype=np.int64)
    concept_code, concepts = _factorize(facts["concept"])
    unit_code, units = _factorize(facts["unit"])
    return FactColumns(
        [result.source],
        [result.ticker],
        [[(a, *records[a]) for a in accns]],
        np.zeros(len(facts), dtype=np.int64),
        remap[accn_codes],  # -1 (no accn) is refused by the writer
        concepts,
        concept_code,
        units,
        unit_code,
        facts["value"].to_numpy(dtype=np.float64),
    )


def _factorize(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        return codes, [str(c) for c in series.cat.categories]
    codes, uniques = pd.factorize(series)
    names = np.asarray(uniques, dtype=object).tolist()  # not Arrow's per-element iteration
    return codes.astype(np.int64), [u if type(u) is str else str(u) for u in names]
