"""Which tickers' facts changed: a cheap per-ticker fingerprint of the database's state.

For incremental re-materialisation (us_gaap/incremental.py). A ticker's fingerprint combines
its filings (count, and its write stamp, or for a ticker without one the smallest/largest/sum
of its filing ids), its facts per filing block on SQLite (`fact_block.n`), and the state of
its source files (size, sha and load time of each file recorded under that ticker).
The queries read one row per filing and per source file, never the fact rows.

The write stamp (`ticker_version`, db/fact_writer.py `content_stamps`) is a hash of what the
ticker stores (its filing rows, and its facts by filing position, concept_unit id and value);
a write that merged sources gets a random one. A ticker with a stamp is fingerprinted by it
instead of its filing ids: on SQLite a rewritten ticker whose filings held the highest ids
gets the same ids back (a value-only change inside a multi-company zip went unseen), and a
bulk zip loaded again with most companies unchanged gives them new ids (every ticker looked
changed: a full rebuild). A ticker written before stamps existed keeps the id-based part
until it is written again.
"""

from __future__ import annotations

from collections import defaultdict

from xxhash import xxh3_64_hexdigest

from narrative_pipeline.db.protocol import RawQueries


def ticker_fingerprints(db: RawQueries) -> dict[str, str]:
    """ticker -> fingerprint (hex) of its filings, fact counts, write stamp and source files."""
    parts: dict[str, list[str]] = defaultdict(list)
    stamps = dict(db._query("SELECT ticker, stamp FROM ticker_version"))
    for ticker, n, lo, hi, total in db._query(
        "SELECT ticker, COUNT(*), MIN(id), MAX(id), SUM(id) FROM filing GROUP BY ticker"
    ):
        stamp = stamps.get(ticker)
        # With a stamp, the content says what changed (new filing ids alone do not).
        parts[ticker].append(f"f{n}:v{stamp}" if stamp is not None else f"f{n}:{lo}:{hi}:{total}")
    if db.is_sqlite:
        for ticker, facts in db._query(
            "SELECT f.ticker, SUM(b.n) FROM filing f JOIN fact_block b ON b.filing_id = f.id "
            "GROUP BY f.ticker"
        ):
            parts[ticker].append(f"b{facts}")
    for ticker, size, sha, loaded in db._query(
        "SELECT ticker, size, sha, loaded_at FROM source_file WHERE ticker IS NOT NULL "
        "ORDER BY path"
    ):
        if ticker in parts:
            parts[ticker].append(f"s{size}:{sha}:{loaded}")
    return {ticker: xxh3_64_hexdigest("|".join(p).encode()) for ticker, p in parts.items()}


def ticker_fact_counts(db: RawQueries, tickers: list[str]) -> int:
    """Facts held by `tickers` (what an incremental update will read back)."""
    total = 0
    for first in range(0, len(tickers), 500):
        chunk = tickers[first : first + 500]
        marks = ",".join("?" * len(chunk))
        rows = db._query(
            f"SELECT COUNT(*) FROM fact WHERE filing_id IN "
            f"(SELECT id FROM filing WHERE ticker IN ({marks}))",
            chunk,
        )
        total += int(rows[0][0])
    return total
