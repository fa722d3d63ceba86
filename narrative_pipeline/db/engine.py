"""The database connection: which URL, which back end, and the raw-cursor transactions and
queries every other db/ module runs its SQL through.

Owns: `resolve_url` (argument, environment, SQLite default), the SQLAlchemy engine with the
SQLite pragmas, the schema set-up of a new or older database, the placeholder style of the
back end, and `Backend.transaction` (one raw DBAPI transaction, fact_block triggers dropped
while a fact writer keeps the blocks right itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

from narrative_pipeline.db import migrations, models
from narrative_pipeline.db.schema import create_schema

IN_CHUNK = 500  # parameters per IN (...) list, well under every back end's limit


def data_dir() -> Path:
    """`$NARRATIVE_DATA_DIR`, default `./data`."""
    return Path(os.environ.get("NARRATIVE_DATA_DIR", "data"))


def resolve_url(url: str | None = None) -> str:
    """The database URL: the argument, else NARRATIVE_DB_URL, else the original's MYSQL_*
    variables, else SQLite at $NARRATIVE_DATA_DIR/narrative.sqlite."""
    if url:
        return _with_mysql_charset(url)
    if os.environ.get("NARRATIVE_DB_URL"):
        return _with_mysql_charset(os.environ["NARRATIVE_DB_URL"])
    if os.environ.get("MYSQL_HOST"):
        return URL.create(
            "mysql+pymysql",
            username=os.environ.get("MYSQL_USER") or None,
            password=os.environ.get("MYSQL_PASSWORD") or None,
            host=os.environ["MYSQL_HOST"],
            port=int(os.environ["MYSQL_PORT"]) if os.environ.get("MYSQL_PORT") else None,
            database=os.environ.get("MYSQL_DATABASE") or "us_gaap",
            query={"charset": "utf8mb4"},
        ).render_as_string(hide_password=False)
    path = data_dir() / "narrative.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _with_mysql_charset(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL + synchronous=NORMAL: durable at checkpoints, no fsync per commit (bulk loads).

    A new database gets 64 KiB pages (set before WAL, which fixes the page size): fact writes
    measured 1.2x faster than with 4 KiB pages, 1.8x with their blocks, mostly in the commit's
    checkpoint (benchmarks/bench_sqlite_write.py). An existing file keeps its page size.
    """
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA page_size=65536")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


class Backend:
    """One database: its URL, engine and SQL dialect details, with the schema in place."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        backend = make_url(self.url).get_backend_name()
        self.is_sqlite = backend == "sqlite"
        self.is_mysql = backend in ("mysql", "mariadb")
        if not (self.is_sqlite or self.is_mysql):
            raise ValueError(f"unsupported database {backend!r}: use sqlite:// or mysql+pymysql://")
        kwargs: dict[str, Any] = {"pool_pre_ping": self.is_mysql}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:
            kwargs["connect_args"] = {"local_infile": True}  # bulk facts via LOAD DATA
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.ph = "?" if self.is_sqlite else "%s"  # the DBAPI placeholder
        self.insert_ignore = "INSERT OR IGNORE" if self.is_sqlite else "INSERT IGNORE"
        # Called when a transaction rolls back (caches of ids it inserted forget them).
        self.rollback_hooks: list[Callable[[], None]] = []
        create_schema(self.engine)
        migrations.add_missing_columns(self.engine, models.filing)  # an older database
        if self.is_sqlite:
            self._create_fact_blocks()

    def _create_fact_blocks(self) -> None:
        """SQLite: the fact_block table and the triggers that keep it true (models.py)."""
        models.sqlite_metadata.create_all(self.engine)
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            for name, body in models.FACT_BLOCK_TRIGGERS.items():
                cur.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
            raw.commit()
        finally:
            raw.close()

    @contextmanager
    def transaction(self, writes_facts: bool = False) -> Iterator[Any]:
        """A raw DBAPI cursor inside one transaction: committed on success, else rolled back.

        `writes_facts`: the caller keeps fact_block right itself, so on SQLite the guard
        triggers are dropped for this transaction and created again before it commits (DDL is
        transactional there, and no other writer can run meanwhile: nobody else ever sees
        the table without them).
        """
        guarded = writes_facts and self.is_sqlite
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN IMMEDIATE" if self.is_sqlite else "START TRANSACTION")
            if guarded:
                for name in models.FACT_BLOCK_TRIGGERS:
                    cur.execute(f"DROP TRIGGER IF EXISTS {name}")
            yield cur
            if guarded:
                for name, body in models.FACT_BLOCK_TRIGGERS.items():
                    cur.execute(f"CREATE TRIGGER {name} {body}")
            raw.commit()
        except BaseException:
            raw.rollback()
            for hook in self.rollback_hooks:
                hook()
            raise
        finally:
            raw.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of one statement (`?` placeholders, translated for the back end)."""
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(sql.replace("?", self.ph), tuple(params))
            return list(cur.fetchall())
        finally:
            raw.close()


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """`items` in slices of `size` (an IN (...) list each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def none_if_na(values: list) -> list:
    """Missing values (None, pd.NA, NaN) as None, what the DBAPI stores as NULL."""
    return [
        None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in values
    ]
