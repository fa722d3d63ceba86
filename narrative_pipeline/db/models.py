"""SQLAlchemy Core tables of the US-GAAP database (one schema for SQLite and MySQL/MariaDB).

Layout choices (measured, see benchmarks/bench_db.py):
- `fact` stores `(filing_id, concept_unit_id, value)` with the primary key (filing_id,
  concept_unit_id): the key makes re-ingestion idempotent, and on SQLite the table is
  `WITHOUT ROWID`, so the key *is* the table (one b-tree, ~21 bytes/fact instead of ~50 with
  text concept/unit columns and a separate unique index). Concept and unit text live once in
  `concept_unit`.
- `fact.filing_id` is not a declared foreign key: InnoDB would check it per inserted row; the
  only writer (`db/fact_writer.py`, behind `DbUsGaap.replace_ticker`/`replace_fact_columns`)
  deletes facts before their filings in one transaction.
- SQLite only: `fact_block` holds each filing's facts once more as two packed arrays
  (concept_unit ids int64, values float64, primary-key order), written in the same transaction
  as the rows. The store build reads them (~11k blobs instead of 2M rows: turning a SQLite row
  into Python objects costs ~0.5 us, five times SQLite's own work). Triggers on `fact` drop a
  filing's block on any INSERT, UPDATE or DELETE by another program, so a block never
  disagrees with the rows; `DbUsGaap` suspends them inside its own transactions, which keep
  the blocks right themselves (see `FACT_BLOCK_TRIGGERS`).
- `filing_source` records which source file holds which filing (db/sources.py).
- Text keys use a binary collation on MySQL (`Assets` and `ASSETS` are different concepts;
  MySQL's default collations are case-insensitive).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

from narrative_pipeline.core.columns import FILING_URL_MAX_CHARS


def key_string(length: int) -> String:
    """VARCHAR compared byte-wise on MySQL/MariaDB, plain VARCHAR elsewhere."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


metadata = MetaData()

concept_type = Table(
    "us_gaap_concept_type",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("concept_type", key_string(255), nullable=False, unique=True),
)

balance_type = Table(
    "us_gaap_balance_type",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("balance_type", key_string(16), nullable=False, unique=True),
)

period_type = Table(
    "us_gaap_period_type",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("period_type", key_string(16), nullable=False, unique=True),
)

concept = Table(
    "us_gaap_concept",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", key_string(255), nullable=False, unique=True),
    Column("concept_type_id", Integer, ForeignKey("us_gaap_concept_type.id"), nullable=True),
    Column("balance_type_id", Integer, ForeignKey("us_gaap_balance_type.id"), nullable=True),
    Column("period_type_id", Integer, ForeignKey("us_gaap_period_type.id"), nullable=True),
    Column("label", Text, nullable=True),
    Column("documentation", Text, nullable=True),
)

source_file = Table(
    "source_file",
    metadata,
    Column("path", key_string(700), primary_key=True),
    Column("ticker", key_string(64), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime", Float(53), nullable=False),
    Column("sha", String(64), nullable=False),
    Column("loaded_at", DateTime, nullable=False),
)

filing = Table(
    "filing",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ticker", key_string(64), nullable=False),
    Column("accn", key_string(64), nullable=False),
    Column("form", String(32), nullable=True),
    Column("fy", Integer, nullable=True),
    Column("fp", String(16), nullable=True),
    Column("filed", String(32), nullable=True),
    # sec-fetcher's current layout only (NULL otherwise); added to older databases on open
    # (db/migrations.py), so every column after `filed` must stay nullable.
    Column("period_end", String(10), nullable=True),
    Column("is_amendment", Boolean, nullable=True),
    Column("filing_url", String(FILING_URL_MAX_CHARS), nullable=True),
    UniqueConstraint("ticker", "accn", name="uq_filing_ticker_accn"),
)

# Which source file holds which filing (db/sources.py): a ticker fed by several files holds
# the union of their filings, and a write never drops another source's filings.
filing_source = Table(
    "filing_source",
    metadata,
    Column("ticker", key_string(64), nullable=False),
    Column("accn", key_string(64), nullable=False),
    Column("source", key_string(500), nullable=False),
    PrimaryKeyConstraint("ticker", "accn", "source", name="pk_filing_source"),
)

# A random stamp per ticker, new at each write of its facts (db/fact_writer.py): part of the
# ticker's fingerprint (db/ticker_state.py), so a rewrite that gets the same filing ids back
# (SQLite reuses the highest ids) with the same fact counts is still seen as a change.
ticker_version = Table(
    "ticker_version",
    metadata,
    Column("ticker", key_string(64), primary_key=True),
    Column("stamp", BigInteger, nullable=False),
)

concept_unit = Table(
    "concept_unit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("concept", key_string(255), nullable=False),
    Column("unit", key_string(128), nullable=False),
    UniqueConstraint("concept", "unit", name="uq_concept_unit"),
)

fact = Table(
    "fact",
    metadata,
    Column("filing_id", Integer, nullable=False),
    Column("concept_unit_id", Integer, nullable=False),
    Column("value", Double, nullable=False),
    PrimaryKeyConstraint("filing_id", "concept_unit_id", name="pk_fact"),
    sqlite_with_rowid=False,
)

TAXONOMY_TABLES = (concept, concept_type, balance_type, period_type)  # delete order

sqlite_metadata = MetaData()  # tables created on SQLite only

fact_block = Table(
    "fact_block",
    sqlite_metadata,
    Column("filing_id", Integer, primary_key=True, autoincrement=False),
    Column("n", Integer, nullable=False),
    Column("pair_ids", LargeBinary, nullable=False),  # int64 little-endian, ascending
    Column("values", LargeBinary, nullable=False),  # float64 little-endian, same order
)

# name -> statement; each drops the block of the filing a change to `fact` touches.
FACT_BLOCK_TRIGGERS = {
    "fact_block_on_insert": "AFTER INSERT ON fact BEGIN "
    "DELETE FROM fact_block WHERE filing_id = NEW.filing_id; END",
    "fact_block_on_update": "AFTER UPDATE ON fact BEGIN "
    "DELETE FROM fact_block WHERE filing_id IN (OLD.filing_id, NEW.filing_id); END",
    "fact_block_on_delete": "AFTER DELETE ON fact BEGIN "
    "DELETE FROM fact_block WHERE filing_id = OLD.filing_id; END",
}
