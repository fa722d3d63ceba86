"""Bring an older database's tables up to the current schema when it is opened.

`create_all` creates missing tables but never touches existing ones, so a database written by an
earlier version lacks the columns added since. Only nullable columns are ever added (rows already
stored get NULL), with a plain `ALTER TABLE ... ADD COLUMN`, which SQLite and MySQL/MariaDB both
run in place. Two processes opening the same old database at once may race to add a column: the
loser's error is ignored once the column is seen to exist.
"""

from __future__ import annotations

import logging

from sqlalchemy import Table, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)


def _existing_columns(engine: Engine, table: Table) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table.name)}


def add_missing_columns(engine: Engine, table: Table) -> list[str]:
    """Add the columns of `table` that the database's copy lacks; returns their names.

    Raises RuntimeError for a missing NOT NULL column (it cannot be added to stored rows).
    """
    existing = _existing_columns(engine, table)
    missing = [c for c in table.columns if c.name not in existing]
    if not missing:
        return []
    prepare = engine.dialect.identifier_preparer
    for column in missing:
        if not column.nullable:
            raise RuntimeError(f"table {table.name!r} lacks NOT NULL column {column.name!r}")
        ddl = (
            f"ALTER TABLE {prepare.quote(table.name)} ADD COLUMN {prepare.quote(column.name)} "
            f"{column.type.compile(dialect=engine.dialect)}"
        )
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(ddl)
        except DBAPIError:
            if column.name not in _existing_columns(engine, table):
                raise
    log.info("added columns %s to table %s", [c.name for c in missing], table.name)
    return [c.name for c in missing]
