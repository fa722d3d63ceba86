"""Taxonomy loading: the SQL string-literal tokenizer, the real dump, the FASB CSV, the CLI."""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import pytest

from narrative_pipeline.db import DbUsGaap
from narrative_pipeline.db import cli as taxonomy_cli
from narrative_pipeline.db.taxonomy import (
    TaxonomyParseError,
    load_taxonomy,
    parse_mysql_dump,
    parse_values,
    read_concepts_csv,
    unescape_sql_string,
)

DUMP = """-- comment
CREATE TABLE `us_gaap_concept` (
  `id` int unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(255) NOT NULL,
  `concept_type_id` int unsigned NOT NULL,
  `balance_type_id` int unsigned DEFAULT NULL,
  `period_type_id` int unsigned DEFAULT NULL,
  `label` text,
  `documentation` text,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_ai_ci;
INSERT INTO `us_gaap_balance_type` VALUES (1,'credit'),(2,'debit');
INSERT INTO `us_gaap_period_type` (`id`, `period_type`) VALUES (2,'duration'),(1,'instant');
INSERT INTO `us_gaap_concept_type` VALUES (1,'xbrli:monetaryItemType');
INSERT INTO `us_gaap_concept` VALUES (1,'Assets',1,2,1,'Assets','It\\'s a \\"sum\\"; (all), of\\nlines \\\\ done'),
(2,'Revenues',1,1,2,'Rev''s','x'),(3,'Ratio',1,NULL,NULL,NULL,NULL);
INSERT INTO `other_table` VALUES (1,'ignored');
"""


def test_unescape_sql_string() -> None:
    assert unescape_sql_string(r"a\'b\\c\nd''e\tf\0g\%") == "a'b\\c\nd'e\tf\x00g%"


def test_parse_values_tokens_and_errors() -> None:
    text = "(1,'a,b)',NULL,-2.5e3),(2,'it''s',3);rest"
    rows, end = parse_values(text, 0, "t")
    assert rows == [(1, "a,b)", None, -2500.0), (2, "it's", 3)]
    assert text[end:] == "rest"
    with pytest.raises(TaxonomyParseError, match="offset"):
        parse_values("(1,'unterminated);", 0, "t")
    with pytest.raises(TaxonomyParseError, match="outside"):
        parse_values("1,(2);", 0, "t")


def test_parse_small_dump(tmp_path: Path) -> None:
    path = tmp_path / "t.sql.gz"
    path.write_bytes(gzip.compress(DUMP.encode()))
    frame = parse_mysql_dump(path).set_index("name")
    assert list(frame.index) == ["Assets", "Revenues", "Ratio"]
    assert frame.loc["Assets", "documentation"] == 'It\'s a "sum"; (all), of\nlines \\ done'
    assert frame.loc["Revenues", "label"] == "Rev's"
    assert (frame.loc["Assets", "balance_type"], frame.loc["Assets", "period_type"]) == (
        "debit",
        "instant",
    )
    assert frame.loc["Revenues", "period_type"] == "duration"
    assert frame.loc["Ratio", ["balance_type", "period_type", "label"]].isna().all()


def test_real_dump_into_sqlite(shared_data: Path, tmp_path: Path) -> None:
    db = DbUsGaap(f"sqlite:///{tmp_path / 'tax.sqlite'}")
    path = shared_data / "taxonomy" / "us_gaap_schema_2025.sql.gz"
    report = load_taxonomy(path, db)
    assert (report.concepts, report.concept_types, report.balance_types, report.period_types) == (
        8469,
        5,
        2,
        2,
    )
    frame = db.taxonomy_frame()
    assert len(frame) == 8469 and frame["name"].is_unique
    assert frame["period_type"].notna().all()
    assert frame["balance_type"].isna().sum() == 984
    assert any("'" in d for d in frame["documentation"].dropna())  # escaped quotes survived
    again = load_taxonomy(path, db)  # reloading replaces, never duplicates
    assert again.concepts == 8469 and len(db.taxonomy_concepts()) == 8469


@pytest.mark.parametrize(
    "header",
    [
        "prefix,name,type,balance,periodType,abstract,label,documentation",
        "Prefix,Element Name,Data Type,Balance Type,Period Type,Abstract,Standard Label,Definition",
        "\ufeffPREFIX,NAME,TYPE,BALANCE,PERIOD_TYPE,ABSTRACT,LABEL,DOCUMENTATION",
    ],
)
def test_fasb_concepts_csv(tmp_path: Path, header: str) -> None:
    path = tmp_path / "concepts.csv"
    path.write_text(
        header + "\n"
        'us-gaap,Assets,xbrli:monetaryItemType,Debit,Instant,false,Assets,"Sum of, all"\n'
        "dei,EntityRegistrantName,xbrli:stringItemType,,duration,false,Name,x\n"
        "us-gaap,Revenues,xbrli:monetaryItemType,credit,duration,false,Revenues,\n"
        ",,,,,,,\n",
        encoding="utf-8",
    )
    frame = read_concepts_csv(path).set_index("name")
    assert list(frame.index) == ["Assets", "Revenues"]
    assert frame.loc["Assets", "documentation"] == "Sum of, all"
    assert (frame.loc["Assets", "balance_type"], frame.loc["Assets", "period_type"]) == (
        "debit",
        "instant",
    )
    db = DbUsGaap(f"sqlite:///{tmp_path / 'csv.sqlite'}")
    assert load_taxonomy(path, db).concepts == 2
    assert db.taxonomy_concepts() == {"Assets", "Revenues"}


def test_csv_without_name_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(TaxonomyParseError, match="no concept name column"):
        read_concepts_csv(path)


def main(argv: list[str]) -> int:
    """The `taxonomy` group alone (the full CLI imports every layer, which takes seconds)."""
    parser = argparse.ArgumentParser()
    taxonomy_cli.register(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def test_cli_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "t.sql"
    dump.write_text(DUMP)
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    assert main(["taxonomy", "load", str(dump), "--db", url]) == 0
    assert "3 concepts" in capsys.readouterr().out
    assert DbUsGaap(url).taxonomy_concepts() == {"Assets", "Revenues", "Ratio"}
    broken = tmp_path / "broken.sql"
    broken.write_text("INSERT INTO `us_gaap_concept` VALUES (1,'x;")
    assert main(["taxonomy", "load", str(broken), "--db", url]) == 2
    assert "error" in capsys.readouterr().out
    assert len(DbUsGaap(url).taxonomy_concepts()) == 3  # the failed load changed nothing
