"""sec-fetcher CSVs (one file per ticker, `VALUE::UNIT` cells) -> ReadResult.

Both sec-fetcher layouts are read, detected per file from the header (the older one: one row
per filing; the current one: one row per period, metadata columns first); what differs is in
sec_fetcher_layout.py.

Vectorised: the whole file becomes one Arrow string array of cells (row-major) plus row and
column indices, and every step after that is an Arrow/numpy column operation; no Python
object is made per cell. Files without double quotes (what sec-fetcher writes) are split with
Arrow string kernels, which costs the same whatever the column count; files with quotes go
through pyarrow.csv. sec-fetcher files are small and wide (~10 rows x ~500 columns), where
pyarrow.csv spends ~10 ms per file on per-column set-up alone. Quotes that only wrap whole
simple fields (`""`, `"accn"`) keep the fast path.

Decisions on bad input (each reported in `messages`; the good part of the file still loads):
- empty file: `error` (likely a failed download; the ticker's stored data is kept).
- no usable filing (header only, every row skipped, no numeric fact), a torn last line, an
  unbalanced quote, a file or line over its cap (readers/limits.py): `error` (held back).
- not UTF-8, unparsable quoting, no `accn` column: `error` (the file is unusable).
- missing `form`/`fy`/`fp`/`filed` column (or, in the current layout, another metadata
  column): loaded with that field NULL.
- duplicated column name: the first copy is used, later copies are ignored.
- a row with the wrong number of fields, or an empty `accn`: that row is skipped.
- a filing (accn) repeated in several rows: the last row wins per (concept, unit); in the
  current layout such rows are kept apart by their period (sec_fetcher_layout.row_keys).
- bad current-layout metadata: see sec_fetcher_layout.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from narrative_pipeline.readers.base import (
    FILING_COLUMNS,
    ReadResult,
    drop_duplicate_facts,
    failed,
    fy_column,
    no_usable_filing,
    parse_value_unit_cells,
    ticker_from_name,
    typed_filing_columns,
)
from narrative_pipeline.readers.landing import scan_landing
from narrative_pipeline.readers.limits import InputTooLarge, held_back_reason, read_file_capped
from narrative_pipeline.readers.sec_fetcher_layout import (
    CURRENT_COLUMNS,
    METADATA_COLUMNS,
    OLDER_COLUMNS,
    RowPlaces,
    check_current_rows,
    is_current_layout,
)

log = logging.getLogger(__name__)
MAX_ROW_MESSAGES = 5
_OLDER_SET = frozenset(OLDER_COLUMNS)


@dataclass
class Grid:
    """A CSV's non-empty cells in long form, plus its header."""

    header: list[str]
    n_rows: int
    cells: pa.Array  # trimmed, non-empty cell texts
    row: np.ndarray  # data-row index of each cell
    col: np.ndarray  # column index of each cell
    places: RowPlaces  # where each data row sits in the file


def iter_csv_files(root: str | Path) -> list[Path]:
    """Every `.csv` file under `root` (subfolders included), sorted, so runs are reproducible
    (readers/landing.py: what is skipped and why)."""
    return scan_landing(root, (".csv",)).files


def _non_empty(
    cells: pa.Array, row: np.ndarray, col: np.ndarray
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    cells = pc.utf8_trim_whitespace(cells.cast(pa.string()))
    filled = pc.fill_null(pc.greater(pc.binary_length(cells), 0), False)
    idx = np.flatnonzero(filled.to_numpy(zero_copy_only=False))
    return pc.take(cells, idx), row[idx], col[idx]


_QUOTED = re.compile(r'"([^"]*)"')


def only_simple_quotes(text: str) -> bool:
    """True when every quote pair wraps a whole field holding no comma, newline or quote
    (e.g. `""` or `"accn"`), so splitting on commas and then dropping the quotes is exact."""
    last_end = -1
    for match in _QUOTED.finditer(text):
        start, end = match.span()
        if start == last_end or any(c in match.group(1) for c in ",\r\n"):
            return False
        if (start > 0 and text[start - 1] not in ",\n") or (
            end < len(text) and text[end] not in ",\r\n"
        ):
            return False
        last_end = end
    return text.count('"') % 2 == 0


def _split_plain(text: str, messages: list[str], unquote: bool = False) -> Grid:
    """Split a CSV without quoted commas/newlines with Arrow string kernels; `unquote` drops
    the quotes of simply quoted fields."""
    lines = pc.list_flatten(pc.split_pattern(pa.array([text]), "\n"))
    lines = pc.utf8_rtrim(lines, characters="\r")
    line_no = (
        np.flatnonzero(pc.greater(pc.binary_length(lines), 0).to_numpy(zero_copy_only=False)) + 1
    )
    lines = pc.take(lines, line_no - 1)
    header = [h.strip().strip('"') if unquote else h.strip() for h in lines[0].as_py().split(",")]
    rows = pc.split_pattern(lines.slice(1), ",")
    lengths = pc.list_value_length(rows).to_numpy()
    good = lengths == len(header)
    if not good.all():
        bad = np.flatnonzero(~good)
        shown = ", ".join(
            f"line {line_no[1 + i]} has {lengths[i]} fields"
            for i in bad[:MAX_ROW_MESSAGES].tolist()
        )
        messages.append(
            f"{len(bad)} rows with a field count other than the header's {len(header)} "
            f"skipped ({shown})"
        )
        rows = pc.filter(rows, pa.array(good))
    n_rows = len(rows)
    cells = pc.list_flatten(rows)
    if unquote:
        cells = pc.utf8_trim(pc.utf8_trim_whitespace(cells), characters='"')
    row = np.repeat(np.arange(n_rows), len(header))
    col = np.tile(np.arange(len(header)), n_rows)
    position = np.flatnonzero(good)
    places = RowPlaces(position, line_no[1 + position])
    return Grid(header, n_rows, *_non_empty(cells, row, col), places)


def _split_quoted(data: bytes, messages: list[str]) -> Grid:
    """Full CSV parsing (quotes, embedded commas) with pyarrow.csv, every column as text."""
    bad_rows: list[int] = []

    def skip_row(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row.number if row.number is not None else -1)
        return "skip"

    table = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(autogenerate_column_names=True, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip_row),
        convert_options=pacsv.ConvertOptions(
            strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    if bad_rows:
        messages.append(
            f"{len(bad_rows)} rows with a field count other than the header's skipped "
            f"(lines {bad_rows[:MAX_ROW_MESSAGES]})"
        )
    header = [str(v.as_py()).strip() for v in (col[0] for col in table.columns)]
    table = table.slice(1)
    n_rows = table.num_rows
    columns = [c.combine_chunks().cast(pa.string()) for c in table.columns]
    cells = pa.concat_arrays(columns) if columns else pa.array([], pa.string())
    col = np.repeat(np.arange(len(columns)), n_rows)
    row = np.tile(np.arange(n_rows), len(columns))
    return Grid(header, n_rows, *_non_empty(cells, row, col), RowPlaces(np.arange(n_rows)))


def _first_copies(header: list[str], messages: list[str]) -> np.ndarray:
    """Bool per column: True for the first column of each name (later duplicates ignored)."""
    seen: dict[str, int] = {}
    first = np.zeros(len(header), dtype=bool)
    for i, name in enumerate(header):
        if name in seen:
            messages.append(
                f"column {name!r} duplicated (positions {seen[name] + 1} and {i + 1}); "
                "the first copy is used"
            )
        else:
            seen[name] = i
            first[i] = True
    return first


def _filing_field(grid: Grid, col_index: int | None) -> list[str | None]:
    """One filing column as a per-row list (None where empty or absent); rows are few."""
    out: list[str | None] = [None] * grid.n_rows
    if col_index is None:
        return out
    sel = np.flatnonzero(grid.col == col_index)
    for row, text in zip(grid.row[sel].tolist(), pc.take(grid.cells, sel).to_pylist(), strict=True):
        out[row] = text
    return out


def _concept_columns(
    header: list[str], first: np.ndarray, taxonomy: set[str] | None, result: ReadResult
) -> np.ndarray:
    """Bool per column: a concept column to read (not a filing column, in the taxonomy)."""
    take = first.copy()
    for i, name in enumerate(header):
        if not take[i]:
            continue
        if name in METADATA_COLUMNS:
            take[i] = False
        elif not name:
            take[i] = False
            result.messages.append(f"column {i + 1} has an empty name and was skipped")
        elif taxonomy is not None and name not in taxonomy:
            take[i] = False
            result.skipped_columns.append(name)
    if taxonomy is None:
        result.taxonomy_applied = False
        result.messages.append(
            f"no taxonomy: all {int(take.sum())} concept columns taken, "
            "balance and period types unknown"
        )
    elif result.skipped_columns:
        result.messages.append(
            f"{len(result.skipped_columns)} columns outside the US-GAAP taxonomy skipped"
        )
    return take


def _grid_from_bytes(data: bytes, result: ReadResult) -> Grid | None:
    """Decode and split the file; sets result.error and returns None when unusable."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        # An error, not an empty ticker: a truncated download must not erase stored data.
        result.error = "empty file: no header, nothing to load"
        return None
    result.error = held_back_reason(data, result.source)
    if result.error:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        result.error = f"not UTF-8 text (byte {exc.start}): {exc.reason}"
        return None
    try:
        if '"' not in text:
            return _split_plain(text, result.messages)
        if only_simple_quotes(text):
            return _split_plain(text, result.messages, unquote=True)
        return _split_quoted(data, result.messages)
    except pa.ArrowInvalid as exc:
        result.error = f"malformed CSV: {exc}"
        return None


def _filing_rows(grid: Grid, index: dict[str, int], result: ReadResult) -> dict[str, list] | None:
    """Per-row filing fields as lists (rows are few), the current layout's checked and keyed
    (sec_fetcher_layout.py); None (with result.error) when there is no accn column."""
    if "accn" not in index:
        result.error = "no 'accn' column: facts cannot be attached to filings"
        return None
    current = is_current_layout(index)
    for name in CURRENT_COLUMNS if current else OLDER_COLUMNS:
        if name == "canonical_order" and name not in index:
            result.messages.append("no 'canonical_order' column: the row order is not checked")
        elif name not in index:
            result.messages.append(f"no {name!r} column: loaded with {name} empty (NULL)")
    fields = {name: _filing_field(grid, index.get(name)) for name in FILING_COLUMNS}
    fields["fy"] = fy_column(pa.array(fields["fy"], pa.string())).to_pylist()
    if current:
        order = (
            _filing_field(grid, index["canonical_order"]) if "canonical_order" in index else None
        )
        check_current_rows(fields, order, grid.places, result.messages)
    return fields


def read_sec_fetcher_csv(path: str | Path, taxonomy_concepts: set[str] | None = None) -> ReadResult:
    """Read one sec-fetcher CSV; the ticker is the file name. Never raises for bad content."""
    path = Path(path)
    result = ReadResult(source=str(path), ticker=ticker_from_name(path.name))
    try:
        data = read_file_capped(path)
    except InputTooLarge as exc:
        return failed(str(path), result.ticker, str(exc))
    except OSError as exc:
        return failed(str(path), result.ticker, f"cannot read file: {exc}")
    grid = _grid_from_bytes(data, result)
    if grid is None:
        return _finish(result)
    first = _first_copies(grid.header, result.messages)
    index = {name: i for i, name in enumerate(grid.header) if first[i]}
    rows = _filing_rows(grid, index, result)
    if rows is None:
        return _finish(result)
    take_col = _concept_columns(grid.header, first, taxonomy_concepts, result)
    _fill_facts(result, grid, rows, take_col)
    if not len(result.facts):
        result.error = no_usable_filing(result)
    return _finish(result)


def _categorical(codes: np.ndarray, categories: list[str]) -> pd.Categorical:
    """Categorical from codes that are valid by construction (pandas' validation of a
    500-name category list costs more than the rest of a small file)."""
    dtype = pd.CategoricalDtype(pd.Index(categories, dtype=object), ordered=False)
    return pd.Categorical.from_codes(
        codes.astype(np.int32, copy=False), dtype=dtype, validate=False
    )


def _fill_facts(
    result: ReadResult, grid: Grid, rows: dict[str, list], take_col: np.ndarray
) -> None:
    """Parse the concept cells of rows that have an accn into result.facts/filings.

    Facts columns are pandas Categoricals built from integer codes (row -> accn, column ->
    concept, unit dictionary), so no string object is made per cell.
    """
    accn_of_row = rows["accn"]
    has_accn = np.array([a is not None for a in accn_of_row], dtype=bool)
    if not has_accn.all():
        result.messages.append(f"{int((~has_accn).sum())} rows without an accn skipped")
    sel = np.flatnonzero(take_col[grid.col] & has_accn[grid.row])
    parsed = parse_value_unit_cells(pc.take(grid.cells, sel))
    result.skipped_cells += parsed.skipped_cells
    result.non_numeric_units.update(parsed.non_numeric_units)
    result.messages.extend(parsed.messages)
    kept = sel[parsed.keep]
    accns: dict[str, int] = {}  # accn -> code, first-seen order; -1 for rows without accn
    accn_codes = np.array(
        [-1 if a is None else accns.setdefault(a, len(accns)) for a in accn_of_row], np.int64
    )
    concept_cols = np.flatnonzero(take_col)
    concept_code = np.full(len(grid.header), -1, dtype=np.int64)
    concept_code[concept_cols] = np.arange(len(concept_cols))
    units = parsed.units.dictionary_encode()
    facts = pd.DataFrame(
        {
            "accn": _categorical(accn_codes[grid.row[kept]], list(accns)),
            "concept": _categorical(
                concept_code[grid.col[kept]], [grid.header[i] for i in concept_cols]
            ),
            "unit": _categorical(
                units.indices.to_numpy(zero_copy_only=False), units.dictionary.to_pylist()
            ),
            "value": parsed.values,
        },
        copy=False,
    )
    n_rep = int(has_accn.sum()) - len(accns)
    if n_rep:
        result.messages.append(f"{n_rep} rows repeat an earlier accn: the last row wins")
        facts, dropped = drop_duplicate_facts(facts)
        result.duplicate_facts += dropped
    result.filings = _filings_frame(rows, accns)
    result.facts = facts


def _filings_frame(rows: dict[str, list], accns: dict[str, int]) -> pd.DataFrame:
    """One filing per accn (the last row of a repeated accn wins), in first-seen order."""
    last_row = {a: i for i, a in enumerate(rows["accn"]) if a is not None}
    picked = [last_row[a] for a in accns]
    frame = pd.DataFrame({name: [rows[name][i] for i in picked] for name in FILING_COLUMNS})
    return typed_filing_columns(frame)


def _finish(result: ReadResult) -> ReadResult:
    if result.error:
        log.warning("%s: %s", result.source, result.error)
        ok = ReadResult(source=result.source, ticker=result.ticker)
        ok.error, ok.messages = result.error, result.messages
        if result.error not in ok.messages:
            ok.messages.append(result.error)
        ok.skipped_columns = result.skipped_columns
        return ok
    return result
