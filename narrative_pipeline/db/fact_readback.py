"""Facts and filings read back: counts, `facts_frame`, `filings_frame`, and `FactCodes` (the
facts as positions into small filing and concept_unit tables) whole or streamed by groups of
tickers, which is what the store build reads.

Owns: decoding (filing id, pair id, value) rows into sorted frames and codes, the grouping of
tickers for `iter_fact_codes`, and the read-ahead (one thread, or helper processes from
db/fact_reader.py when many filings have no fact_block). The rows themselves are read by
db/fact_reader.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import make_url

from narrative_pipeline.core.columns import FILING_COLUMNS
from narrative_pipeline.db import fact_reader
from narrative_pipeline.db.engine import Backend, chunks, none_if_na
from narrative_pipeline.db.fact_reader import FACT_ROW_DTYPE
from narrative_pipeline.pipe_worker import processes_enabled

FACT_GROUP_ROWS = 262_144  # facts per group streamed by iter_fact_codes
READ_HELPERS = 2  # processes reading fact rows for iter_fact_codes (with 2+ cores)
HELPER_MIN_ROW_FACTS = 500_000  # facts to read row by row before helper processes pay


@dataclass
class FactCodes:
    """Facts as positions into per-filing and per-pair string tables (see `fact_codes`)."""

    filing_ticker: pa.Array  # large_string, one per filing
    filing_accn: pa.Array
    pair_concept: pa.Array  # large_string, one per concept_unit row
    pair_unit: pa.Array
    filing_pos: np.ndarray  # per fact: index into the filing tables
    pair_pos: np.ndarray  # per fact: index into the pair tables
    values: np.ndarray  # float64 per fact

    def __len__(self) -> int:
        return len(self.values)

    def frame(self) -> pd.DataFrame:
        """DataFrame[ticker, accn, concept, unit, value] (object string columns)."""
        return pd.DataFrame(
            {
                "ticker": self.filing_ticker.take(self.filing_pos).to_pandas(),
                "accn": self.filing_accn.take(self.filing_pos).to_pandas(),
                "concept": self.pair_concept.take(self.pair_pos).to_pandas(),
                "unit": self.pair_unit.take(self.pair_pos).to_pandas(),
                "value": self.values,
            }
        )


class FactReadback:
    """The stored filings and facts of one database, read back."""

    def __init__(self, backend: Backend) -> None:
        self._db = backend

    def fact_count(self) -> int:
        return int(self._db.query("SELECT COUNT(*) FROM fact")[0][0])

    def filing_count(self) -> int:
        return int(self._db.query("SELECT COUNT(*) FROM filing")[0][0])

    def tickers(self) -> list[str]:
        return [r[0] for r in self._db.query("SELECT DISTINCT ticker FROM filing ORDER BY ticker")]

    def facts_frame(
        self, tickers: Sequence[str] | None = None, filing_columns: Sequence[str] = ()
    ) -> pd.DataFrame:
        """DataFrame[ticker, accn, concept, unit, value] sorted by those four columns, then
        each of `filing_columns` (FILING_COLUMNS other than accn, e.g. `period_end`) of the
        fact's filing.

        Read as three numeric columns (filing id, pair id, value) and decoded with array
        lookups against the small filing and concept_unit tables.
        """
        codes = self.fact_codes(tickers)
        frame = codes.frame() if len(codes) else _empty_facts_frame()
        if filing_columns:
            frame = _with_filing_columns(frame, self.filings_frame(tickers, filing_columns))
        return frame

    def filings_frame(
        self, tickers: Sequence[str] | None = None, columns: Sequence[str] = FILING_COLUMNS[1:]
    ) -> pd.DataFrame:
        """DataFrame[ticker, accn, *columns] of the stored filings, sorted by ticker and accn
        (fy as Int64, is_amendment as boolean; NULL fields as missing values)."""
        unknown = [c for c in columns if c not in FILING_COLUMNS[1:]]
        if unknown:
            raise ValueError(f"unknown filing columns {unknown}; known: {FILING_COLUMNS[1:]}")
        names = ["ticker", "accn", *columns]
        rows = self._filing_rows(f"SELECT {', '.join(names)} FROM filing", tickers)
        return _typed_filings(pd.DataFrame(rows, columns=names))

    def fact_codes(self, tickers: Sequence[str] | None = None) -> FactCodes:
        """`facts_frame`'s rows, in the same order, as positions into the (small) filing and
        pair tables: no string object per fact (what the store build reads)."""
        filings = self._filings(tickers)
        pairs = PairTable(self._pair_rows())
        ids = None if tickers is None else filings["id"].tolist()
        rows = self.fact_rows(ids) if len(filings) else np.zeros(0, dtype=FACT_ROW_DTYPE)
        return _decode_facts(rows, filings, pairs)

    def iter_fact_codes(self, target_rows: int = FACT_GROUP_ROWS) -> Iterator[FactCodes]:
        """`fact_codes` of every ticker, a group of sorted tickers (about `target_rows` facts)
        at a time, in order: what the store build streams, in bounded memory.

        On SQLite most filings are read from their fact_block (models.py), a blob pair each.
        The next group is read and decoded (sorted) while the caller works on this one, by
        one thread (SQLite and numpy's sorts release the GIL); or, when many filings must be
        read row by row (no blocks: a database written by an older version, or rows changed
        by another program), read by helper processes on a second core (db/fact_reader.py:
        row conversion holds the GIL). Every group shares one `PairTable` (same arrays).
        """
        per_ticker = sorted(self._db.query("SELECT ticker, COUNT(*) FROM filing GROUP BY ticker"))
        if not per_ticker:
            return
        n_filings = sum(count for _, count in per_ticker)
        n_facts = self.fact_count()
        groups = _ticker_groups(per_ticker, n_facts / n_filings, target_rows)
        row_facts = n_facts * self.filings_without_blocks() / n_filings
        yield from self._read_fact_groups(groups, row_facts, PairTable(self._pair_rows()))

    def filings_without_blocks(self) -> int:
        """Filings whose facts must be read row by row (all of them off SQLite)."""
        if not self._db.is_sqlite:
            return self.filing_count()
        sql = "SELECT COUNT(*) FROM filing WHERE id NOT IN (SELECT filing_id FROM fact_block)"
        return int(self._db.query(sql)[0][0])

    def _read_fact_groups(
        self, groups: list[list[str]], row_facts: float, pairs: PairTable
    ) -> Iterator[FactCodes]:
        """The FactCodes of each group of tickers, in order, read ahead of the caller (only
        a few groups' filings and rows are held at a time)."""
        source = self._reader_source()
        cores = os.cpu_count() or 1
        if (
            source is not None
            and cores >= 2
            and row_facts >= HELPER_MIN_ROW_FACTS
            and len(groups) >= 2
            and processes_enabled()
        ):
            helpers = min(READ_HELPERS, cores)
            by_id = ((f, f["id"].tolist()) for f in map(self._filings, groups))
            read = fact_reader.read_groups_in_helpers(source, by_id, helpers, self._build_facts)
            for filings, rows in read:
                yield _decode_facts(rows, filings, pairs)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = [pool.submit(self._group_codes, tickers, pairs) for tickers in groups[:1]]
            for k in range(len(groups)):
                if k + 1 < len(groups):
                    pending.append(pool.submit(self._group_codes, groups[k + 1], pairs))
                yield pending.pop(0).result()

    def _reader_source(self) -> dict | None:
        """What a fact-reader helper opens: this SQLite file, or the MySQL server with the
        connect arguments SQLAlchemy itself would pass to PyMySQL; None for an in-memory
        SQLite database (another process cannot see it)."""
        url = make_url(self._db.url)
        if self._db.is_sqlite:
            path = url.database
            return {"sqlite": path} if path and path != ":memory:" else None
        _, kwargs = self._db.engine.dialect.create_connect_args(url)
        return {"mysql": kwargs}

    def _group_codes(self, tickers: list[str], pairs: PairTable) -> FactCodes:
        filings = self._filings(tickers)
        return _decode_facts(self._build_facts(filings["id"].tolist()), filings, pairs)

    def _build_facts(self, filing_ids: Sequence[int]) -> np.ndarray:
        """The rows of `filing_ids` as the build reads them: from fact_block where there is
        one (SQLite), else row by row."""
        if not self._db.is_sqlite:
            return self.fact_rows(filing_ids)
        raw = self._db.engine.raw_connection()
        try:
            return fact_reader.read_facts(raw.cursor(), filing_ids)
        finally:
            raw.close()

    def _filing_rows(self, sql: str, tickers: Sequence[str] | None) -> list[tuple]:
        """`sql` (a SELECT ... FROM filing) for every filing, or those of `tickers`."""
        if tickers is None:
            return self._db.query(sql)
        rows: list[tuple] = []
        for chunk in chunks(sorted(set(tickers))):
            rows += self._db.query(f"{sql} WHERE ticker IN ({','.join('?' * len(chunk))})", chunk)
        return rows

    def _filings(self, tickers: Sequence[str] | None) -> pd.DataFrame:
        rows = self._filing_rows("SELECT id, ticker, accn FROM filing", tickers)
        frame = pd.DataFrame(rows, columns=["id", "ticker", "accn"])
        return frame.sort_values("id").reset_index(drop=True)

    def _pair_rows(self) -> list[tuple]:
        return self._db.query("SELECT id, concept, unit FROM concept_unit ORDER BY id")

    def fact_rows(self, filing_ids: Sequence[int] | None) -> np.ndarray:
        """(filing_id, pair_id, value) rows of `filing_ids` (None: every fact) as a
        FACT_ROW_DTYPE array: cursor rows straight into numpy, no list of tuples."""
        raw = self._db.engine.raw_connection()
        try:
            return fact_reader.read_fact_rows(raw.cursor(), filing_ids, self._db.ph)
        finally:
            raw.close()


def _typed_filings(frame: pd.DataFrame) -> pd.DataFrame:
    """A filings frame with the readers' dtypes, sorted by (ticker, accn)."""
    if "fy" in frame:
        frame["fy"] = pd.array(none_if_na(frame["fy"].tolist()), dtype="Int64")
    if "is_amendment" in frame:
        values = none_if_na(frame["is_amendment"].tolist())
        frame["is_amendment"] = pd.array(
            [None if v is None else bool(v) for v in values], dtype="boolean"
        )
    return frame.sort_values(["ticker", "accn"], kind="stable").reset_index(drop=True)


def _with_filing_columns(facts: pd.DataFrame, filings: pd.DataFrame) -> pd.DataFrame:
    """`facts` (in its order) with the columns of its rows' filings appended."""
    facts = facts.astype({"ticker": object, "accn": object})
    filings = filings.astype({"ticker": object, "accn": object})
    return facts.merge(filings, on=["ticker", "accn"], how="left", validate="many_to_one")


def _empty_facts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticker": pd.Series([], dtype="str"),
            "accn": pd.Series([], dtype="str"),
            "concept": pd.Series([], dtype="str"),
            "unit": pd.Series([], dtype="str"),
            "value": pd.Series([], dtype="float64"),
        }
    )


def _ticker_groups(
    per_ticker: list[tuple[str, int]], facts_per_filing: float, target_rows: int
) -> list[list[str]]:
    """The sorted tickers cut into groups of about `target_rows` facts, estimated from each
    ticker's filing count (facts per filing are alike); a ticker is never split."""
    groups: list[list[str]] = [[]]
    rows = 0.0
    for ticker, n_filings in per_ticker:
        if groups[-1] and rows + n_filings * facts_per_filing > target_rows:
            groups.append([])
            rows = 0.0
        groups[-1].append(ticker)
        rows += n_filings * facts_per_filing
    return groups


def _rank(*keys: pd.Series) -> np.ndarray:
    """Position of each row in the order sorted by `keys` (lexicographic)."""
    frame = pd.DataFrame({i: k.astype(object).to_numpy() for i, k in enumerate(keys)})
    order = frame.sort_values(list(frame.columns), kind="mergesort").index.to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


class PairTable:
    """The concept_unit table as the decoder uses it, built once per read: ids (ascending),
    each pair's rank in (concept, unit) order, and the strings as Arrow arrays (shared by
    every FactCodes of an `iter_fact_codes`, so consumers can cache per table)."""

    def __init__(self, rows: list[tuple]) -> None:
        frame = pd.DataFrame(rows, columns=["id", "concept", "unit"])
        self.ids = frame["id"].to_numpy(dtype=np.int64)
        self.rank = _rank(frame["concept"], frame["unit"]) if len(frame) else self.ids
        self.concept = _strings(frame["concept"])
        self.unit = _strings(frame["unit"])
        top = int(self.ids.max()) + 1 if len(self.ids) else 0
        # pair id -> position by one array lookup when the ids are dense (they are: SQL
        # autoincrement); searchsorted otherwise
        self._position: np.ndarray | None = None
        if top <= 4 * len(self.ids) + 1024:
            self._position = np.zeros(top, dtype=np.int64)
            self._position[self.ids] = np.arange(len(self.ids))

    def positions(self, pair_ids: np.ndarray) -> np.ndarray:
        """Each id's position in the table (every id must be in it)."""
        if self._position is not None and (
            not len(pair_ids) or pair_ids.max() < len(self._position)
        ):
            return self._position[pair_ids]
        return np.searchsorted(self.ids, pair_ids)


def _strings(column: pd.Series) -> pa.Array:
    return pa.array(column.astype(object).tolist(), pa.large_string())


def _filing_positions(filing_ids: np.ndarray, rows_filing_id: np.ndarray) -> np.ndarray:
    """Each row's position in `filing_ids` (ascending): one search per run of equal ids (rows
    come grouped by filing), repeated over the run."""
    if not len(rows_filing_id):
        return np.zeros(0, dtype=np.int64)
    heads = np.flatnonzero(np.r_[True, rows_filing_id[1:] != rows_filing_id[:-1]])
    lengths = np.diff(np.append(heads, len(rows_filing_id)))
    return np.repeat(np.searchsorted(filing_ids, rows_filing_id[heads]), lengths)


def _stable_order(key: np.ndarray, bound: int) -> np.ndarray:
    """np.argsort(key, kind="stable") of non-negative int64 keys below `bound`. When key and
    position fit in 63 bits together, the unique keys (key, position) are sorted as values
    (a SIMD sort, ~3x faster than the stable argsort) and the positions read back from their
    low bits."""
    n = len(key)
    shift = max(1, (n - 1).bit_length())
    if bound.bit_length() + shift > 63:
        return np.argsort(key, kind="stable")
    packed = (key << shift) | np.arange(n, dtype=np.int64)
    packed.sort()
    return packed & ((1 << shift) - 1)


def _decode_facts(raw: np.ndarray, filings: pd.DataFrame, pairs: PairTable) -> FactCodes:
    """FACT_ROW_DTYPE rows -> FactCodes sorted by (ticker, accn, concept, unit); `filings`
    (id, ticker, accn) sorted by id, holding every filing of the rows; `pairs` holding every
    pair of the rows."""
    filing_pos = _filing_positions(filings["id"].to_numpy(), raw["filing_id"])
    pair_pos = pairs.positions(raw["pair_id"])
    if len(raw):
        filing_rank = _rank(filings["ticker"], filings["accn"])
        # one integer key, (filing rank, pair rank): its stable order is the lexsort of the two
        key = filing_rank[filing_pos] * max(1, len(pairs.rank)) + pairs.rank[pair_pos]
        order = _stable_order(key, len(filing_rank) * max(1, len(pairs.rank)))
        filing_pos, pair_pos, values = filing_pos[order], pair_pos[order], raw["value"][order]
    else:
        values = np.zeros(0, dtype=np.float64)
    return FactCodes(
        _strings(filings["ticker"]),
        _strings(filings["accn"]),
        pairs.concept,
        pairs.unit,
        filing_pos,
        pair_pos,
        values,
    )
