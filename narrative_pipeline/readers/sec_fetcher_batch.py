"""Many sec-fetcher CSVs read together (`read_sec_fetcher_csvs` -> CsvBatch): the batched path.

Per-file fixed costs (Arrow kernel calls, DataFrames) outweigh the work on a ~2k-cell file, so
files that the fast path can take exactly as they are (either layout with every metadata
column, no quotes beyond simple ones, no ragged rows, unique accns, no skipped cell, nothing to
report about the current layout's metadata) are split and parsed with one set of
kernels for all of them; every other file is read by `sec_fetcher_csv.read_sec_fetcher_csv`,
so results and messages are always that reader's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from narrative_pipeline.readers.base import (
    FILING_COLUMNS,
    FactColumns,
    FileReport,
    ReadResult,
    concat_fact_columns,
    fact_columns_from_result,
    fy_column,
    parse_value_unit_cells,
    ticker_from_name,
)
from narrative_pipeline.readers.limits import InputTooLarge, held_back_reason, read_file_capped
from narrative_pipeline.readers.sec_fetcher_csv import only_simple_quotes, read_sec_fetcher_csv
from narrative_pipeline.readers.sec_fetcher_layout import (
    CURRENT_COLUMNS,
    METADATA_COLUMNS,
    OLDER_COLUMNS,
    RowPlaces,
    check_current_rows,
    is_current_layout,
)

ROLES = (*FILING_COLUMNS, "canonical_order")  # metadata column -> position in a line's fields
_FY = ROLES.index("fy")
_CHECKED = ("period_end", "is_amendment", "filing_url")  # fields check_current_rows rewrites


@dataclass
class CsvBatch:
    """Several sec-fetcher CSVs read together.

    `reports[i]` is file i's FileReport: a ReadResult without its frames (source, ticker,
    error, counts and messages exactly as `read_sec_fetcher_csv` gives them); the facts and
    filings of every file without `error` are in `columns` (in file order). `results()` rebuilds the full
    per-file ReadResults (slower; for callers that want the frames).
    """

    reports: list[FileReport]
    columns: FactColumns
    column_of_file: list[int]  # file i -> its ticker position in `columns`, -1 when error

    def results(self) -> list[ReadResult]:
        out = []
        for report, t in zip(self.reports, self.column_of_file, strict=True):
            out.append(report.as_result() if t < 0 else self.columns.ticker_result(t, report))
        return out


@dataclass
class _PlainFile:
    """A file that passed the per-file checks of the batched fast path."""

    index: int  # position in the batch
    path: Path
    header: list[str]
    lines: list[str]  # data lines (non-empty, `\r` trimmed)
    result: FileReport  # messages/skipped columns so far
    unquote: bool  # simply quoted fields (`""`, `"accn"`): quotes are dropped
    current: bool  # sec-fetcher's current layout (sec_fetcher_layout.py)


def read_sec_fetcher_csvs(
    files: Sequence[str | Path], taxonomy_concepts: set[str] | None = None
) -> CsvBatch:
    """Read many CSVs with one set of Arrow kernels for all of them (per-file kernel calls cost
    more than the work on a ~2k-cell file). Gives the same results as `read_sec_fetcher_csv`
    on each file: a file the fast path cannot take exactly as it is (quotes, ragged rows,
    duplicated or missing columns, rows without or with repeated accn, any skipped cell) is
    read again by `read_sec_fetcher_csv`, so its messages are that reader's own (so is a
    current-layout file whose metadata checks have anything to report).
    """
    paths = [Path(p) for p in files]
    reports: list[ReadResult | FileReport | None] = [None] * len(paths)
    plain: list[_PlainFile] = []
    for i, path in enumerate(paths):
        candidate = _plain_candidate(i, path, taxonomy_concepts)
        if candidate is None:
            reports[i] = read_sec_fetcher_csv(path, taxonomy_concepts)
        else:
            plain.append(candidate)
    fast, slow = _read_plain_files(plain)
    for i in slow:
        reports[i] = read_sec_fetcher_csv(paths[i], taxonomy_concepts)
    parts: list[FactColumns] = []
    order: list[int] = []  # file index of each ticker in `parts` order
    if fast is not None:
        parts.append(fast[0])
        order += fast[1]
        for pf in plain:
            if pf.index in fast[2]:
                reports[pf.index] = pf.result
    taken = set(order)
    for i, report in enumerate(reports):
        if i not in taken and isinstance(report, ReadResult) and not report.error:
            parts.append(fact_columns_from_result(report))
            order.append(i)
    columns = concat_fact_columns(parts) if parts else _no_columns()
    column_of_file = [-1] * len(paths)
    for t, i in enumerate(order):
        column_of_file[i] = t
    return CsvBatch([FileReport.of(r) for r in reports if r is not None], columns, column_of_file)


def _no_columns() -> FactColumns:
    empty = np.zeros(0, np.int64)
    return FactColumns([], [], [], empty, empty, [], empty, [], empty, np.zeros(0, np.float64))


def _plain_candidate(index: int, path: Path, taxonomy: set[str] | None) -> _PlainFile | None:
    """The file split into header and data lines when the fast path can take it, else None.
    Only whole lines become Python strings here, never cells."""
    try:
        data = read_file_capped(path)
    except (OSError, InputTooLarge):
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if held_back_reason(data, str(path)):
        return None  # the per-file reader reports it
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    unquote = '"' in text
    if unquote and not only_simple_quotes(text):
        return None
    lines = [line for line in (raw.rstrip("\r") for raw in text.split("\n")) if line]
    if len(lines) < 2:
        return None  # empty or header-only: the per-file reader's messages
    header = [h.strip().strip('"') if unquote else h.strip() for h in lines[0].split(",")]
    names = set(header)
    current = is_current_layout(names)
    required = CURRENT_COLUMNS if current else OLDER_COLUMNS
    if len(names) != len(header) or "" in names or not names.issuperset(required):
        return None
    commas = len(header) - 1
    if any(line.count(",") != commas for line in lines[1:]):
        return None
    result = FileReport(source=str(path), ticker=ticker_from_name(path.name))
    take = _plain_concept_columns(header, taxonomy, result)
    return _PlainFile(
        index,
        path,
        [h if t or h in METADATA_COLUMNS else "" for h, t in zip(header, take, strict=True)],
        lines[1:],
        result,
        unquote,
        current,
    )


def _plain_concept_columns(
    header: list[str], taxonomy: set[str] | None, result: FileReport
) -> list[bool]:
    """`_concept_columns` for a header with unique, non-empty names that holds every older
    filing column (what `_plain_candidate` checked): the same flags and messages, fewer steps."""
    if taxonomy is None:
        result.taxonomy_applied = False
        take = [name not in METADATA_COLUMNS for name in header]
        result.messages.append(
            f"no taxonomy: all {sum(take)} concept columns taken, balance and period types unknown"
        )
        return take
    take = [name not in METADATA_COLUMNS and name in taxonomy for name in header]
    result.skipped_columns = [
        name for name, t in zip(header, take, strict=True) if not t and name not in METADATA_COLUMNS
    ]
    if result.skipped_columns:
        result.messages.append(
            f"{len(result.skipped_columns)} columns outside the US-GAAP taxonomy skipped"
        )
    return take


def _read_plain_files(
    plain: list[_PlainFile],
) -> tuple[tuple[FactColumns, list[int], set[int]] | None, list[int]]:
    """The fast path for `plain` files: (FactColumns, file index per ticker, those indices)
    for the files it took, and the indices of those to read again one by one."""
    if not plain:
        return None, []
    lines = [line for pf in plain for line in pf.lines]
    n_lines = np.array([len(pf.lines) for pf in plain], dtype=np.int64)
    n_cols = np.array([len(pf.header) for pf in plain], dtype=np.int64)
    file_of_line = np.repeat(np.arange(len(plain)), n_lines)
    row_of_line = np.arange(len(lines)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
    rows = pc.split_pattern(pa.array(lines, pa.string()), ",")
    cells = pc.utf8_trim_whitespace(pc.list_flatten(rows))
    if any(pf.unquote for pf in plain):
        # As `_split_plain(unquote=True)`; a no-op on the cells of files without quotes.
        cells = pc.utf8_trim_whitespace(pc.utf8_trim(cells, characters='"'))
    line_of_cell = pc.list_parent_indices(rows).to_numpy()
    col = np.arange(len(cells)) - rows.offsets.to_numpy()[:-1][line_of_cell]
    col_base = np.cumsum(n_cols) - n_cols
    gcol = col_base[file_of_line[line_of_cell]] + col
    # Global column tables: concept name code per column (-1: not taken), filing role.
    all_names = pa.array([name for pf in plain for name in pf.header], pa.string())
    role_of_col = pc.fill_null(pc.index_in(all_names, value_set=pa.array(ROLES)), -1).to_numpy(
        zero_copy_only=False
    )
    encoded = all_names.dictionary_encode()
    concept_of_col = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    not_taken = (role_of_col >= 0) | (pc.binary_length(all_names).to_numpy() == 0)
    concept_of_col[not_taken] = -1
    names = encoded.dictionary.to_pylist()
    filled = pc.greater(pc.binary_length(cells), 0).to_numpy(zero_copy_only=False)
    # Filing fields (ROLES per row): few enough for Python lists.
    fsel = np.flatnonzero(filled & (role_of_col[gcol] >= 0))
    fields = [[None] * len(ROLES) for _ in range(len(lines))]
    for line, k, text in zip(
        line_of_cell[fsel].tolist(),
        role_of_col[gcol[fsel]].tolist(),
        pc.take(cells, fsel).to_pylist(),
        strict=True,
    ):
        fields[line][k] = text
    fy = fy_column(pa.array([f[_FY] for f in fields], pa.string())).to_pylist()
    bad_file = np.zeros(len(plain), dtype=bool)
    starts = (np.cumsum(n_lines) - n_lines).tolist()
    for f in range(len(plain)):
        start = starts[f]
        accns = [fields[line][0] for line in range(start, start + int(n_lines[f]))]
        if None in accns or len(set(accns)) != len(accns):
            bad_file[f] = True
        elif plain[f].current:
            bad_file[f] = not _current_rows_clean(fields, fy, range(start, start + int(n_lines[f])))
    # Concept cells of every file at once.
    csel = np.flatnonzero(filled & (concept_of_col[gcol] >= 0))
    parsed = parse_value_unit_cells(pc.take(cells, csel))
    skipped = np.ones(len(csel), dtype=bool)
    skipped[parsed.keep] = False
    bad_file[np.unique(file_of_line[line_of_cell[csel[skipped]]])] = True
    kept = csel[parsed.keep]
    fact_file = file_of_line[line_of_cell[kept]]
    bad_file |= np.bincount(fact_file, minlength=len(plain)) == 0  # no fact: the reader's error
    good = ~bad_file[fact_file]
    kept, fact_file = kept[good], fact_file[good]
    units = pc.take(parsed.units, np.flatnonzero(good)).dictionary_encode()
    taken = np.flatnonzero(~bad_file)
    ticker_of_file = np.full(len(plain), -1, dtype=np.int64)
    ticker_of_file[taken] = np.arange(len(taken))
    filings = []
    for f in taken.tolist():
        start = starts[f]
        filings.append(
            [
                (*fields[line][:_FY], fy[line], *fields[line][_FY + 1 : len(FILING_COLUMNS)])
                for line in range(start, start + int(n_lines[f]))
            ]
        )
    columns = FactColumns(
        sources=[plain[f].result.source for f in taken.tolist()],
        tickers=[plain[f].result.ticker for f in taken.tolist()],
        filings=filings,
        ticker_index=ticker_of_file[fact_file],
        filing_index=row_of_line[line_of_cell[kept]],
        concepts=names,
        concept_code=concept_of_col[gcol[kept]],
        units=units.dictionary.to_pylist(),
        unit_code=units.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        values=parsed.values[good],
    )
    taken_files = [plain[f].index for f in taken.tolist()]
    slow = [plain[f].index for f in np.flatnonzero(bad_file).tolist()]
    return (columns, taken_files, set(taken_files)), slow


def _current_rows_clean(fields: list[list], fy: list, lines: range) -> bool:
    """Run the per-file reader's current-layout checks on one file's rows (`lines` of
    `fields`), storing the checked values; False when they report anything (the file is then
    read again one by one, for that reader's own messages)."""
    by_name = {name: [fields[line][k] for line in lines] for k, name in enumerate(ROLES)}
    by_name["fy"] = [fy[line] for line in lines]
    messages: list[str] = []
    order = by_name.pop("canonical_order")
    check_current_rows(by_name, order, RowPlaces(np.arange(len(lines))), messages)
    if messages:
        return False
    for name in _CHECKED:
        k = ROLES.index(name)
        for line, value in zip(lines, by_name[name], strict=True):
            fields[line][k] = value
    return True
