"""sec-fetcher's two CSV layouts: which one a header is, and the current layout's row metadata.

The layouts (../shared/reference/sec-fetcher-csv-layouts.md describes them in full):
- older: fact columns, then `fy, fp, form, filed, accn`; one row per filing.
- current: `canonical_order, fy, fp, period_end, filed, form, is_amendment, accn, filing_url`,
  then the fact columns; one row per (fy, fp) period, newest first (canonical_order 0 =
  newest); a row's values may come from several filings of its period, and its accn, form,
  filed and period_end describe the most recently filed one (`form` without `/A`,
  `is_amendment` telling whether that filing was an amendment).

Detection is per file, by column name, never by position: a header holding any column that only
the current layout has (CURRENT_ONLY_COLUMNS) is the current layout. In either layout every
metadata name (METADATA_COLUMNS) is kept out of the concept columns.

Row key (what `filing.accn` stores and every fact of the row points at): the row's accn. In the
current layout one filing can be the latest of several periods (e.g. facts without an SEC `fy`
get the year of their end date, so one filing's facts can fall into two years' rows); keyed by
accn alone such rows would overwrite each other's facts. An accn found on several rows of a
current-layout file therefore keys each of those rows as `accn#fy-fp` (ROW_KEY_SEPARATOR), which
keeps their values apart; an accn used by one row stays the plain accn (the usual case).

Decisions on bad current-layout metadata (one message per kind, naming lines; the row loads):
- `period_end` empty or not a YYYY-MM-DD date: NULL.
- `is_amendment` other than true/false (any case) or 1/0: NULL.
- `filing_url` longer than FILING_URL_MAX_CHARS: NULL.
- `canonical_order` not an integer, or not the row's 0-based position among the data rows:
  reported (the file was reordered or rewritten since sec-fetcher wrote it); rows load as read.
- a missing metadata column: that field NULL (no `canonical_order`: the order is not checked).
- a (fy, fp) period on several rows (the layout has one row per period), a row without fy or
  fp, or an 8-K row (sec-fetcher writes neither): reported; the row loads as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from narrative_pipeline.core.columns import FILING_URL_MAX_CHARS

OLDER_COLUMNS = ("accn", "form", "fy", "fp", "filed")
CURRENT_COLUMNS = (
    "canonical_order",
    "fy",
    "fp",
    "period_end",
    "filed",
    "form",
    "is_amendment",
    "accn",
    "filing_url",
)
CURRENT_ONLY_COLUMNS = ("canonical_order", "period_end", "is_amendment", "filing_url")
METADATA_COLUMNS = frozenset(CURRENT_COLUMNS) | frozenset(OLDER_COLUMNS)
_CURRENT_ONLY = frozenset(CURRENT_ONLY_COLUMNS)
ROW_KEY_SEPARATOR = "#"
EXAMPLES = 3  # lines named per message
_8K_FORMS = ("8-K", "8-K/A")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def is_current_layout(header: Iterable[str]) -> bool:
    """True when the header has any column that only the current layout has."""
    return not _CURRENT_ONLY.isdisjoint(header)


@dataclass
class RowPlaces:
    """Where each data row read sits in its file."""

    position: np.ndarray  # 0-based position among the file's data rows (skipped rows count)
    line: np.ndarray | None = None  # 1-based file line, when known

    def name(self, row: int) -> str:
        if self.line is not None:
            return f"line {int(self.line[row])}"
        return f"data row {int(self.position[row]) + 1}"

    def names(self, rows: list[int], what: list[str] | None = None) -> str:
        """'line 3, line 7 (+2 more)', each followed by `what[k]` when given."""
        shown = [
            self.name(r) + (f": {what[k]}" if what is not None else "")
            for k, r in enumerate(rows[:EXAMPLES])
        ]
        more = f" (+{len(rows) - EXAMPLES} more)" if len(rows) > EXAMPLES else ""
        return ", ".join(shown) + more


def check_current_rows(
    fields: dict[str, list],
    canonical_order: list[str | None] | None,
    places: RowPlaces,
    messages: list[str],
) -> None:
    """Validate a current-layout file's row metadata in `fields` (per-row lists, fy already
    parsed) in place, check canonical_order, and turn `accn` into the row keys."""
    if canonical_order is not None:
        _check_order(canonical_order, places, messages)
    fields["period_end"] = _dates(fields["period_end"], places, messages)
    fields["is_amendment"] = _booleans(fields["is_amendment"], places, messages)
    fields["filing_url"] = _urls(fields["filing_url"], places, messages)
    _report_repeated_periods(fields, places, messages)
    _report_unexpected_rows(fields, places, messages)
    fields["accn"] = row_keys(fields["accn"], fields["fy"], fields["fp"], messages)


def _check_order(values: list[str | None], places: RowPlaces, messages: list[str]) -> None:
    if values == list(map(str, places.position.tolist())):
        return  # the usual case, without a per-row parse
    not_int: list[int] = []
    wrong: list[int] = []
    for row, text in enumerate(values):
        if text is None or not text.lstrip("+-").isdigit():
            not_int.append(row)
        elif int(text) != int(places.position[row]):
            wrong.append(row)
    if not_int:
        messages.append(
            f"{len(not_int)} rows with a canonical_order that is not an integer "
            f"({places.names(not_int, [repr(values[r]) for r in not_int])})"
        )
    if wrong:
        what = [f"{values[r]} at position {int(places.position[r])}" for r in wrong]
        messages.append(
            f"canonical_order disagrees with the row position on {len(wrong)} of "
            f"{len(values)} rows ({places.names(wrong, what)}): the file was reordered or "
            "rewritten after sec-fetcher wrote it; rows loaded in file order"
        )


def _parsed(values: list[str | None], parse: Callable[[str], Any]) -> tuple[list, list[int]]:
    """parse(text) of each value (None stays None, a failed parse gives None) and the rows
    whose parse failed."""
    out: list = []
    bad: list[int] = []
    for row, text in enumerate(values):
        value = None if text is None else parse(text)
        if text is not None and value is None:
            bad.append(row)
        out.append(value)
    return out, bad


def _report_bad(
    bad: list[int], values: list, what: str, places: RowPlaces, messages: list[str]
) -> None:
    if bad:
        shown = [repr(values[r]) for r in bad]
        messages.append(f"{len(bad)} {what} stored as NULL ({places.names(bad, shown)})")


def _dates(values: list[str | None], places: RowPlaces, messages: list[str]) -> list:
    missing = [row for row, text in enumerate(values) if text is None]
    if missing:
        messages.append(f"{len(missing)} rows without a period_end ({places.names(missing)})")
    out, bad = _parsed(values, lambda text: text if _is_iso_date(text) else None)
    _report_bad(bad, values, "period_end values not a YYYY-MM-DD date", places, messages)
    return out


def _is_iso_date(text: str) -> bool:
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _booleans(values: list[str | None], places: RowPlaces, messages: list[str]) -> list:
    out, bad = _parsed(values, lambda text: _BOOLEANS.get(text.lower()))
    _report_bad(bad, values, "is_amendment values other than true/false", places, messages)
    return out


def _urls(values: list[str | None], places: RowPlaces, messages: list[str]) -> list:
    long = [row for row, text in enumerate(values) if text and len(text) > FILING_URL_MAX_CHARS]
    if not long:
        return values
    messages.append(
        f"{len(long)} filing_url values longer than {FILING_URL_MAX_CHARS} characters stored "
        f"as NULL ({places.names(long)})"
    )
    drop = set(long)
    return [None if row in drop else text for row, text in enumerate(values)]


def _report_repeated_periods(fields: dict[str, list], places: RowPlaces, messages: list) -> None:
    periods = list(zip(fields["fy"], fields["fp"], strict=True))
    counts = Counter(periods)
    repeated = [row for row, period in enumerate(periods) if counts[period] > 1]
    if repeated:
        what = [f"fy {fields['fy'][r]} fp {fields['fp'][r]}" for r in repeated]
        messages.append(
            f"{len(repeated)} rows share a (fy, fp) period with another row (the current "
            f"layout has one row per period) ({places.names(repeated, what)})"
        )


def _report_unexpected_rows(fields: dict[str, list], places: RowPlaces, messages: list) -> None:
    """Rows sec-fetcher's current layout never holds: no fy or fp, or an 8-K form."""
    no_period = [
        r
        for r, (fy, fp) in enumerate(zip(fields["fy"], fields["fp"], strict=True))
        if fy is None or fp is None
    ]
    if no_period:
        messages.append(
            f"{len(no_period)} rows without a fy or fp (the current layout has both on every "
            f"row) ({places.names(no_period)})"
        )
    eight_k = [r for r, form in enumerate(fields["form"]) if form and form.upper() in _8K_FORMS]
    if eight_k:
        messages.append(
            f"{len(eight_k)} 8-K rows (sec-fetcher drops 8-K observations) "
            f"({places.names(eight_k)})"
        )


def row_keys(accns: list[str | None], fys: list, fps: list, messages: list[str]) -> list:
    """The row keys of a current-layout file: the accn, or `accn#fy-fp` for an accn that
    several rows share (see the module docstring)."""
    counts = Counter(a for a in accns if a is not None)
    shared = {a for a, n in counts.items() if n > 1}
    if not shared:
        return accns
    keys = [
        f"{a}{ROW_KEY_SEPARATOR}{'' if fy is None else fy}-{fp or ''}" if a in shared else a
        for a, fy, fp in zip(accns, fys, fps, strict=True)
    ]
    example = next(k for k in keys if k and ROW_KEY_SEPARATOR in k)
    messages.append(
        f"{len(shared)} accn values are the latest filing of several periods "
        f"({sum(counts[a] for a in shared)} rows): those rows are keyed as "
        f"'accn{ROW_KEY_SEPARATOR}fy-fp' (e.g. {example!r}) so their values stay apart"
    )
    return keys
