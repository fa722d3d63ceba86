"""Loading the US-GAAP taxonomy from a MySQL dump or from the FASB concepts worksheet (CSV).

The dump (`us_gaap_schema_2025.sql.gz`) is parsed here rather than piped into a server: it uses
the MySQL-8-only collation `utf8mb4_0900_ai_ci`, which MariaDB rejects, and SQLite cannot run
MySQL DDL at all. Only the INSERT statements of the four taxonomy tables are read; the column
order comes from the dump's CREATE TABLE (or the INSERT's own column list).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from narrative_pipeline.core.columns import TAXONOMY_COLUMNS

if TYPE_CHECKING:
    from narrative_pipeline.db.protocol import TaxonomyWriter

# Column order of the original schema, used when a dump has neither CREATE TABLE nor a column list.
DEFAULT_COLUMNS = {
    "us_gaap_concept": [
        "id",
        "name",
        "concept_type_id",
        "balance_type_id",
        "period_type_id",
        "label",
        "documentation",
    ],
    "us_gaap_concept_type": ["id", "concept_type"],
    "us_gaap_balance_type": ["id", "balance_type"],
    "us_gaap_period_type": ["id", "period_type"],
}
TABLES = tuple(DEFAULT_COLUMNS)
_CREATE = re.compile(r"CREATE TABLE\s+`?(\w+)`?\s*\((.*?)\n\)", re.S | re.I)
_CREATE_COLUMN = re.compile(r"^\s*`(\w+)`\s", re.M)
_INSERT = re.compile(r"INSERT\s+(?:IGNORE\s+)?INTO\s+`?(\w+)`?\s*(\(([^)]*)\))?\s*VALUES\s*", re.I)
# One token of a VALUES list: a quoted string (backslash escapes and '' doubling), NULL, a
# number, or punctuation. Anything else is a syntax error reported with its position.
_TOKEN = re.compile(
    r"\s*(?:'(?P<str>(?:[^'\\]|\\.|'')*)'|(?P<null>NULL)\b|(?P<num>[-+]?[0-9.]+(?:[eE][-+]?\d+)?)"
    r"|(?P<punct>[(),;]))",
    re.S | re.I,
)
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_ESCAPE = re.compile(r"\\(.)|''", re.S)


class TaxonomyParseError(ValueError):
    """The source could not be read as a taxonomy (message names the file and position)."""


@dataclass
class TaxonomyLoadReport:
    source: str
    concepts: int = 0
    concept_types: int = 0
    balance_types: int = 0
    period_types: int = 0
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: {self.concepts} concepts, {self.concept_types} concept types, "
            f"{self.balance_types} balance types, {self.period_types} period types"
        )


def unescape_sql_string(body: str) -> str:
    """The value of a MySQL string literal's body: \\n \\t \\0 \\' \\\\ ... and '' -> '."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "''":
            return "'"
        char = match.group(1)
        return _ESCAPES.get(char, char)  # \' \" \\ \% \_ and unknown escapes: the char itself

    return _ESCAPE.sub(one, body)


def parse_values(text: str, start: int, where: str) -> tuple[list[tuple], int]:
    """Tuples of a `VALUES (...),(...);` list starting at `start`; returns (rows, end)."""
    rows: list[tuple] = []
    row: list[Any] | None = None  # None: between tuples
    pos = start
    while True:
        match = _TOKEN.match(text, pos)
        if not match:
            if row is None and not text[pos:].strip():
                return rows, len(text)  # statement ends at end of file without ';'
            snippet = text[pos : pos + 40].strip()
            raise TaxonomyParseError(f"{where}: unexpected text at offset {pos}: {snippet!r}")
        pos = match.end()
        punct = match.group("punct")
        if row is None:
            if punct == "(":
                row = []
            elif punct == ";":
                return rows, pos
            elif punct != ",":
                raise TaxonomyParseError(f"{where}: value outside (...) at offset {match.start()}")
        elif punct == ")":
            rows.append(tuple(row))
            row = None
        elif punct is None:
            row.append(_token_value(match))
        elif punct != ",":
            raise TaxonomyParseError(f"{where}: unexpected {punct!r} at offset {match.start()}")


def _token_value(match: re.Match[str]) -> Any:
    if match.group("str") is not None:
        return unescape_sql_string(match.group("str"))
    if match.group("null") is not None:
        return None
    number = match.group("num")
    return float(number) if any(c in number for c in ".eE") else int(number)


def read_sql_text(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.read().decode("utf-8")
    except (OSError, EOFError) as exc:
        raise TaxonomyParseError(f"{path}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise TaxonomyParseError(f"{path}: not UTF-8 at byte {exc.start}") from exc


def parse_mysql_dump(path: str | Path) -> pd.DataFrame:
    """The taxonomy in a MySQL dump as DataFrame[name, label, documentation, balance_type,
    period_type, concept_type] (type columns resolved to their names)."""
    path = Path(path)
    text = read_sql_text(path)
    columns = {m.group(1): _CREATE_COLUMN.findall(m.group(2)) for m in _CREATE.finditer(text)}
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    for match in _INSERT.finditer(text):
        table = match.group(1)
        if table not in tables:
            continue
        names = (
            [c.strip().strip("`") for c in match.group(3).split(",")]
            if match.group(3)
            else columns.get(table, DEFAULT_COLUMNS[table])
        )
        if not names:
            raise TaxonomyParseError(f"{path}: no column list for table {table}")
        where = f"{path}: INSERT INTO {table}"
        rows, _ = parse_values(text, match.end(), where)
        for row in rows:
            if len(row) != len(names):
                raise TaxonomyParseError(
                    f"{where}: row {row[:2]} has {len(row)} values, expected {len(names)}"
                )
            tables[table].append(dict(zip(names, row, strict=True)))
    if not tables["us_gaap_concept"]:
        raise TaxonomyParseError(f"{path}: no INSERT INTO us_gaap_concept found")
    return _resolve_types(tables)


def _resolve_types(tables: dict[str, list[dict]]) -> pd.DataFrame:
    def lookup(table: str, column: str) -> dict[Any, str]:
        return {row["id"]: row[column] for row in tables[table]}

    kinds = {
        "concept_type": lookup("us_gaap_concept_type", "concept_type"),
        "balance_type": lookup("us_gaap_balance_type", "balance_type"),
        "period_type": lookup("us_gaap_period_type", "period_type"),
    }
    records = [
        {
            "name": row["name"],
            "label": row.get("label"),
            "documentation": row.get("documentation"),
            **{kind: ids.get(row.get(f"{kind}_id")) for kind, ids in kinds.items()},
        }
        for row in tables["us_gaap_concept"]
    ]
    return pd.DataFrame.from_records(records, columns=TAXONOMY_COLUMNS)


# Normalised header (lower case, no spaces/underscores/hyphens) -> our column.
_CSV_HEADERS = {
    "name": "name",
    "elementname": "name",
    "element": "name",
    "concept": "name",
    "conceptname": "name",
    "prefix": "prefix",
    "namespaceprefix": "prefix",
    "type": "concept_type",
    "datatype": "concept_type",
    "itemtype": "concept_type",
    "concepttype": "concept_type",
    "balance": "balance_type",
    "balancetype": "balance_type",
    "periodtype": "period_type",
    "period": "period_type",
    "label": "label",
    "standardlabel": "label",
    "documentation": "documentation",
    "definition": "documentation",
    "description": "documentation",
    "abstract": "abstract",
}


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lstrip("\ufeff")).lower()


def read_concepts_csv(path: str | Path) -> pd.DataFrame:
    """The FASB taxonomy's concepts worksheet exported as CSV -> the taxonomy frame.

    Accepts common header variants (name/element name, type/data type, balance, periodType/
    period type, label/standard label, documentation/definition), case-insensitively. When a
    `prefix` column exists only `us-gaap` rows are kept; `us-gaap:Name` names are stripped.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaxonomyParseError(f"{path}: cannot read as UTF-8 text: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise TaxonomyParseError(f"{path}: empty file")
    mapping = {i: _CSV_HEADERS.get(_normalise_header(h)) for i, h in enumerate(header)}
    if "name" not in mapping.values():
        raise TaxonomyParseError(f"{path}: no concept name column in header {header[:8]}")
    records = []
    for line_no, row in enumerate(reader, start=2):
        record: dict[str, str | int | None] = {
            col: row[i].strip() or None for i, col in mapping.items() if col and i < len(row)
        }
        name = record.get("name")
        if not isinstance(name, str):
            continue
        prefix, _, local = name.rpartition(":")
        prefix = (str(record.get("prefix") or "") or prefix or "us-gaap").lower()
        if prefix != "us-gaap":
            continue
        record["name"] = local
        for kind in ("balance_type", "period_type"):
            value = record.get(kind)
            if isinstance(value, str):
                record[kind] = value.lower()
        record["line"] = line_no
        records.append(record)
    if not records:
        raise TaxonomyParseError(f"{path}: no us-gaap concept rows")
    return pd.DataFrame.from_records(records).reindex(columns=TAXONOMY_COLUMNS)


def read_taxonomy(path: str | Path) -> pd.DataFrame:
    """Dispatch on the file name: `.sql`/`.sql.gz` dump, else a CSV worksheet."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".sql", ".sql.gz")):
        return parse_mysql_dump(path)
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return read_concepts_csv(path)
    raise TaxonomyParseError(f"{path}: unknown taxonomy format (expected .sql, .sql.gz or .csv)")


def load_taxonomy(path: str | Path, db: TaxonomyWriter) -> TaxonomyLoadReport:
    """Read a taxonomy file and replace the database's taxonomy with it (one transaction)."""
    frame = read_taxonomy(path)
    report = TaxonomyLoadReport(source=str(path))
    counts = db.replace_taxonomy(frame)
    report.concepts = counts["concepts"]
    report.concept_types = counts["concept_types"]
    report.balance_types = counts["balance_types"]
    report.period_types = counts["period_types"]
    missing = int(frame["period_type"].isna().sum())
    if missing:
        report.messages.append(f"{missing} concepts without a period type")
    return report
