"""`narrative-pipeline taxonomy load SOURCE [--db URL]`: US-GAAP taxonomy into the database."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `taxonomy` command group."""
    group = subparsers.add_parser("taxonomy", help="US-GAAP taxonomy in the database")
    sub = group.add_subparsers(dest="taxonomy_command", required=True)
    load = sub.add_parser(
        "load",
        help="load a MySQL dump (.sql/.sql.gz) or the FASB concepts worksheet (.csv)",
    )
    load.add_argument("source", help="taxonomy file, e.g. us_gaap_schema_2025.sql.gz")
    load.add_argument(
        "--db",
        default=None,
        help="database URL (default: NARRATIVE_DB_URL, MYSQL_*, or SQLite in NARRATIVE_DATA_DIR)",
    )
    load.set_defaults(func=_load)


def _load(args: argparse.Namespace) -> int:
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.db.taxonomy import TaxonomyParseError, load_taxonomy

    db = DbUsGaap(args.db)
    try:
        report = load_taxonomy(args.source, db)
    except (TaxonomyParseError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    finally:
        db.close()
    print(f"loaded into {db!r}: {report.summary()}")
    for message in report.messages:
        print(f"  note: {message}")
    return 0
