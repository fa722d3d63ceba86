"""Creating the database's tables, and the one-line error when the database cannot be opened
(a missing MySQL database used to end in a 142-line driver traceback)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from narrative_pipeline.db import models


class DatabaseUnavailable(RuntimeError):
    """The database cannot be opened (one line saying why, e.g. a MySQL database missing)."""


MYSQL_UNKNOWN_DATABASE = 1049


def create_schema(engine: Engine) -> None:
    """The tables, or DatabaseUnavailable with a one-line hint (not a long driver traceback)."""
    from sqlalchemy.exc import OperationalError

    try:
        models.metadata.create_all(engine)
    except OperationalError as exc:
        url = engine.url
        code = getattr(exc.orig, "args", (None,))[0]
        if code == MYSQL_UNKNOWN_DATABASE:
            hint = (
                f"database {url.database!r} does not exist on {url.host}:{url.port or 3306}: "
                f"create it (CREATE DATABASE `{url.database}` CHARACTER SET utf8mb4) or fix "
                "NARRATIVE_DB_URL / MYSQL_DATABASE"
            )
        else:
            hint = f"cannot open {url.render_as_string(hide_password=True)}: {exc.orig}"
        raise DatabaseUnavailable(hint) from None
