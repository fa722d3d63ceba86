"""Which source file holds which filing (table `filing_source`), and the write rules built on
it so that ingestion never loses stored data (issue 12).

A source is a file path (symlinks resolved), or `zip path!member` for a bulk-zip member. Rules,
applied per ticker inside the write's transaction (`DbUsGaap.replace_fact_columns`):
- **Shrink guard.** A write from source S that would drop filings S supplied before is
  refused (`SourceShrinkRefused`: the stored data stays byte for byte) unless `allow_shrink`
  (sec-fetcher files only grow: a file with fewer filings is cut or broken).
- **Union of sources.** Filings another source holds are never deleted by S's write. When
  every stored filing of the ticker is S's alone (the usual case) the ticker is rewritten
  whole, as before; otherwise (`write_shared`) S's own filings are replaced, and a filing
  S shares with another source is merged: S's value wins per (concept, unit), the facts only
  the other source has stay, and values that differ are counted as conflicts (`SourceNote`).
- **Filings stored before this table existed** are attributed once to the `source_file`
  rows of their ticker (`adopt_untracked`); filings still without a source count as held by
  an unknown source (never dropped by a write, merged into).
- **A deleted source file** keeps its filings (nothing is dropped on a missing file) until
  `prune_missing` (CLI `--prune-missing`, raw_records config `prune_missing_sources`) removes
  the sources no longer on disk and the filings no other source holds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from narrative_pipeline.core.columns import FILING_COLUMNS
from narrative_pipeline.db import fact_reader

SOURCE_KEY_CHARS = 500  # filing_source.source (ticker + accn + source fit InnoDB's key limit)
TICKER_CHARS = 64  # filing.ticker
ACCN_CHARS = 64  # filing.accn
IN_CHUNK = 500
EXAMPLES = 3


class SourceShrinkRefused(ValueError):
    """A file would drop filings it supplied before: held back, stored data kept."""


@dataclass
class SourceNote:
    """What a write reports about sources: filings shared with another source, conflicts."""

    source: str
    message: str
    conflicts: int = 0


@dataclass
class TickerPlan:
    """What the database holds for one ticker of a write, seen from the writing source."""

    mine: set[str]  # accns this source held before
    others: set[str]  # stored accns another (or an unknown) source holds
    stored: set[str]  # every stored accn of the ticker
    new: set[str]  # accns of this write

    @property
    def whole(self) -> bool:
        """Every stored filing is this source's alone: rewrite the ticker whole."""
        return not self.others

    @property
    def dropped(self) -> list[str]:
        return sorted(self.mine - self.new)


def source_key(source: str) -> str:
    """The key a source is stored under: the real path (plus `!member`), at most
    SOURCE_KEY_CHARS (longer ones end in a hash)."""
    path, bang, member = source.partition("!")
    key = os.path.realpath(path) + bang + member
    if len(key) > SOURCE_KEY_CHARS:
        digest = hashlib.sha1(key.encode()).hexdigest()
        key = key[: SOURCE_KEY_CHARS - len(digest) - 1] + "#" + digest
    return key


def _in(ph: str, n: int) -> str:
    return "(" + ",".join([ph] * n) + ")"


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def plan_writes(
    cur: Any, ph: str, tickers: Sequence[str], keys: Sequence[str], new: Sequence[set[str]]
) -> list[TickerPlan]:
    """Per ticker of a write: which stored filings are this source's, which another's."""
    held: dict[str, dict[str, set[str]]] = {}
    for chunk in _chunks(list(tickers)):
        cur.execute(
            "SELECT f.ticker, f.accn, s.source FROM filing f LEFT JOIN filing_source s "
            f"ON s.ticker = f.ticker AND s.accn = f.accn WHERE f.ticker IN {_in(ph, len(chunk))}",
            tuple(chunk),
        )
        for ticker, accn, source in cur.fetchall():
            sources = held.setdefault(ticker, {}).setdefault(accn, set())
            if source is not None:
                sources.add(source)
    plans = []
    for ticker, key, accns in zip(tickers, keys, new, strict=True):
        stored = held.get(ticker, {})
        plans.append(
            TickerPlan(
                mine={a for a, s in stored.items() if key in s},
                others={a for a, s in stored.items() if s != {key}},
                stored=set(stored),
                new=set(accns),
            )
        )
    return plans


def refusals(
    plans: Sequence[TickerPlan], sources: Sequence[str], allow_shrink: bool
) -> dict[int, SourceShrinkRefused]:
    """Position -> refusal for each ticker whose write would drop its source's filings."""
    if allow_shrink:
        return {}
    out = {}
    for t, (plan, source) in enumerate(zip(plans, sources, strict=True)):
        dropped = plan.dropped
        if dropped:
            out[t] = SourceShrinkRefused(
                f"{source}: would drop {len(dropped)} of the {len(plan.mine)} filings this file "
                f"supplied before (e.g. {', '.join(dropped[:EXAMPLES])}); file held back, stored "
                "data kept (sec-fetcher files only grow; --allow-shrink replaces deliberately)"
            )
    return out


def name_problems(tickers: Sequence[str], filings: Sequence[list[tuple]]) -> dict[int, str]:
    """Position -> why a ticker cannot be stored: a ticker or accn longer than its column."""
    out = {}
    for t, (ticker, rows) in enumerate(zip(tickers, filings, strict=True)):
        if len(ticker) > TICKER_CHARS:
            out[t] = (
                f"ticker {ticker[:20]!r}... is {len(ticker)} characters; the database holds "
                f"at most {TICKER_CHARS} (rename the file)"
            )
        else:
            long = [r[0] for r in rows if len(str(r[0])) > ACCN_CHARS]
            if long:
                out[t] = f"{len(long)} accn values longer than {ACCN_CHARS} characters"
    return out


def record_whole(cur: Any, ph: str, tickers: Sequence[str], keys: Sequence[str], filings) -> None:
    """The sources of tickers written whole (their rows were deleted with the ticker): only
    their writer holds their filings now."""
    rows = [
        (ticker, row[0], key)
        for ticker, key, ticker_filings in zip(tickers, keys, filings, strict=True)
        for row in ticker_filings
    ]
    if rows:
        cur.executemany(
            f"INSERT INTO filing_source (ticker, accn, source) VALUES ({ph},{ph},{ph})", rows
        )


def write_shared(
    cur: Any,
    ph: str,
    is_sqlite: bool,
    ticker: str,
    key: str,
    filings: list[tuple],
    filing_index: np.ndarray,
    pair_ids: np.ndarray,
    values: np.ndarray,
    plan: TickerPlan,
) -> SourceNote | None:
    """One ticker that shares filings with another source: replace this source's own
    filings, merge the shared ones (this file's value wins), keep every other filing."""
    own_only = plan.mine - plan.others
    _delete_filings(cur, ph, is_sqlite, ticker, sorted(own_only - plan.new))
    fresh = [row for row in filings if row[0] not in plan.stored]
    if fresh:
        cur.executemany(filing_insert(ph), [filing_row(ticker, row) for row in fresh])
    cur.execute(f"SELECT accn, id FROM filing WHERE ticker = {ph}", (ticker,))
    id_of = dict(cur.fetchall())
    fid = np.array([id_of[row[0]] for row in filings], dtype=np.int64)[filing_index]
    replaced = [id_of[a] for a in sorted(own_only & plan.new)]
    _update_filing_fields(cur, ph, ticker, [row for row in filings if row[0] in own_only])
    shared_accns = sorted(plan.new & plan.others)
    shared = [id_of[a] for a in shared_accns]
    _delete_fact_rows(cur, ph, replaced)
    conflicts = _clear_shared(cur, ph, shared, fid, pair_ids, values)
    order = np.lexsort((pair_ids, fid))
    cur.executemany(
        f"INSERT INTO fact (filing_id, concept_unit_id, value) VALUES ({ph},{ph},{ph})",
        zip(fid[order].tolist(), pair_ids[order].tolist(), values[order].tolist(), strict=True),
    )
    if is_sqlite:
        _rebuild_blocks(cur, sorted({id_of[row[0]] for row in filings}))
    cur.execute(f"DELETE FROM filing_source WHERE ticker = {ph} AND source = {ph}", (ticker, key))
    cur.executemany(
        f"INSERT INTO filing_source (ticker, accn, source) VALUES ({ph},{ph},{ph})",
        [(ticker, row[0], key) for row in filings],
    )
    if not shared:
        return None
    return SourceNote(
        key,
        f"{len(shared)} filings also held by another source (e.g. "
        f"{', '.join(shared_accns[:EXAMPLES])}): facts merged, {conflicts} with a different "
        "value (this file's value kept)",
        conflicts,
    )


def _clear_shared(
    cur: Any, ph: str, shared: list[int], fid: np.ndarray, pair_ids: np.ndarray, values: np.ndarray
) -> int:
    """Delete the stored facts of shared filings that this write brings again; returns how
    many of them had a different value (conflicts)."""
    if not shared:
        return 0
    existing: dict[tuple[int, int], float] = {}
    for chunk in _chunks(shared):
        cur.execute(
            "SELECT filing_id, concept_unit_id, value FROM fact "
            f"WHERE filing_id IN {_in(ph, len(chunk))}",
            tuple(chunk),
        )
        existing.update({(f, c): v for f, c, v in cur.fetchall()})
    again = [
        (f, c, v)
        for f, c, v in zip(fid.tolist(), pair_ids.tolist(), values.tolist(), strict=True)
        if (f, c) in existing
    ]
    conflicts = sum(existing[(f, c)] != v for f, c, v in again)
    cur.executemany(
        f"DELETE FROM fact WHERE filing_id = {ph} AND concept_unit_id = {ph}",
        [(f, c) for f, c, _ in again],
    )
    return int(conflicts)


def filing_insert(ph: str) -> str:
    """The INSERT of one `filing` row: ticker, then FILING_COLUMNS (both write paths)."""
    names = ", ".join(("ticker", *FILING_COLUMNS))
    marks = ",".join([ph] * (1 + len(FILING_COLUMNS)))
    return f"INSERT INTO filing ({names}) VALUES ({marks})"


def filing_row(ticker: str, filing: tuple) -> tuple:
    """(ticker, *FILING_COLUMNS): a shorter tuple (the older five fields) is padded with NULLs."""
    return (ticker, *filing) + (None,) * (len(FILING_COLUMNS) - len(filing))


def _update_filing_fields(cur: Any, ph: str, ticker: str, rows: list[tuple]) -> None:
    """The fields after accn (FILING_COLUMNS[1:]) of filings this source alone holds, as the
    file has them now."""
    if rows:
        assignments = ", ".join(f"{name} = {ph}" for name in FILING_COLUMNS[1:])
        cur.executemany(
            f"UPDATE filing SET {assignments} WHERE ticker = {ph} AND accn = {ph}",
            [(*filing_row(ticker, row)[2:], ticker, row[0]) for row in rows],
        )


def _delete_fact_rows(cur: Any, ph: str, filing_ids: list[int]) -> None:
    for chunk in _chunks(filing_ids):
        cur.execute(f"DELETE FROM fact WHERE filing_id IN {_in(ph, len(chunk))}", tuple(chunk))


def _delete_filings(cur: Any, ph: str, is_sqlite: bool, ticker: str, accns: list[str]) -> int:
    """Delete these filings of `ticker` with their facts, blocks and source rows."""
    if not accns:
        return 0
    ids = []
    for chunk in _chunks(accns):
        cur.execute(
            f"SELECT id FROM filing WHERE ticker = {ph} AND accn IN {_in(ph, len(chunk))}",
            (ticker, *chunk),
        )
        ids += [r[0] for r in cur.fetchall()]
    _delete_fact_rows(cur, ph, ids)
    for chunk in _chunks(ids):
        if is_sqlite:
            cur.execute(f"DELETE FROM fact_block WHERE filing_id IN {_in(ph, len(chunk))}", chunk)
        cur.execute(f"DELETE FROM filing WHERE id IN {_in(ph, len(chunk))}", tuple(chunk))
    for chunk in _chunks(accns):
        cur.execute(
            f"DELETE FROM filing_source WHERE ticker = {ph} AND accn IN {_in(ph, len(chunk))}",
            (ticker, *chunk),
        )
    return len(ids)


def _rebuild_blocks(cur: Any, filing_ids: list[int]) -> None:
    """SQLite: the fact_block of each filing again, from its rows (merged filings)."""
    for chunk in _chunks(filing_ids):
        marks = _in("?", len(chunk))
        cur.execute(f"DELETE FROM fact_block WHERE filing_id IN {marks}", tuple(chunk))
        cur.execute(
            "SELECT filing_id, concept_unit_id, value FROM fact "
            f"WHERE filing_id IN {marks} ORDER BY filing_id, concept_unit_id",
            tuple(chunk),
        )
        rows = cur.fetchall()
        if rows:
            fid, cid, values = (np.array(c) for c in zip(*rows, strict=True))
            cur.executemany(
                'INSERT INTO fact_block (filing_id, n, pair_ids, "values") VALUES (?,?,?,?)',
                fact_reader.pack_blocks(
                    fid.astype(np.int64), cid.astype(np.int64), values.astype(np.float64)
                ),
            )


def adopt_untracked(cur: Any) -> None:
    """Once, for a database written before `filing_source` existed: each filing is held by the
    recorded source files of its ticker."""
    cur.execute(
        "INSERT INTO filing_source (ticker, accn, source) "
        "SELECT f.ticker, f.accn, s.path FROM filing f JOIN source_file s ON s.ticker = f.ticker "
        f"WHERE LENGTH(s.path) <= {SOURCE_KEY_CHARS}"
    )


def prune_missing(cur: Any, ph: str, is_sqlite: bool) -> dict[str, int]:
    """Forget sources whose file is gone from disk, and delete the filings no other source
    holds. Returns counts: sources, filings deleted."""
    cur.execute("SELECT DISTINCT source FROM filing_source")
    gone = [s for (s,) in cur.fetchall() if not os.path.exists(s.partition("!")[0])]
    deleted = 0
    for key in gone:
        cur.execute(f"SELECT ticker, accn FROM filing_source WHERE source = {ph}", (key,))
        held = cur.fetchall()
        cur.execute(f"DELETE FROM filing_source WHERE source = {ph}", (key,))
        by_ticker: dict[str, list[str]] = {}
        for ticker, accn in held:
            cur.execute(
                f"SELECT COUNT(*) FROM filing_source WHERE ticker = {ph} AND accn = {ph}",
                (ticker, accn),
            )
            if not cur.fetchone()[0]:
                by_ticker.setdefault(ticker, []).append(accn)
        for ticker, accns in by_ticker.items():
            deleted += _delete_filings(cur, ph, is_sqlite, ticker, accns)
    cur.execute("SELECT path FROM source_file")
    missing_files = [p for (p,) in cur.fetchall() if not os.path.exists(p)]
    for chunk in _chunks(missing_files):
        cur.execute(f"DELETE FROM source_file WHERE path IN {_in(ph, len(chunk))}", tuple(chunk))
    return {"sources": len(gone), "filings_deleted": deleted}
