"""README's Configuration table is THE table of environment variables: every variable the
package reads is a row of it, every row is a variable something reads, and the other documents
link to it instead of repeating it."""

from __future__ import annotations

import re
from pathlib import Path

from narrative_pipeline_tests.test_deploy_docs import variables_read_by_the_package

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
# Rows for variables that something other than the package reads, and where that is visible.
READ_OUTSIDE_THE_PACKAGE = {
    "DAGSTER_HOME": "Makefile",
    "TMPDIR": "narrative_pipeline/us_gaap/pair_index_build.py",  # read by tempfile, not by us
}
# Documents that talk about configuration and must point at the table rather than copy it.
LINKING_DOCUMENTS = ["ARCHITECTURE.md", "docs/DEPLOYMENT.md"]


def configuration_section() -> str:
    text = README.read_text()
    start = text.index("\n## Configuration\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def table_rows() -> dict[str, list[str]]:
    """variable -> its row's cells, for every row of the Configuration table."""
    rows: dict[str, list[str]] = {}
    for line in configuration_section().splitlines():
        match = re.match(r"\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} has two rows"
            rows[match.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_the_table_has_one_simple_row_per_variable():
    rows = table_rows()
    assert len(rows) >= 10
    for name, cells in rows.items():
        # name | default | read by: meaning (keeps merges of added rows trivial)
        assert len(cells) == 3, f"{name}: expected 3 columns, got {cells}"
        assert cells[1] and cells[2], f"{name}: empty default or description"


def test_every_variable_the_package_reads_is_in_the_table():
    missing = variables_read_by_the_package() - set(table_rows())
    assert not missing, f"add a row to README's Configuration table: {sorted(missing)}"


def test_every_row_is_a_variable_that_something_reads():
    read = variables_read_by_the_package()
    for name in set(table_rows()) - read:
        assert name in READ_OUTSIDE_THE_PACKAGE, f"{name} is in the table but nothing reads it"
        where = REPO_ROOT / READ_OUTSIDE_THE_PACKAGE[name]
        assert name in where.read_text(), f"{name} is no longer used in {where}"


def test_no_other_document_repeats_the_table():
    for doc in ["README.md", *LINKING_DOCUMENTS]:
        text = (REPO_ROOT / doc).read_text()
        if doc == "README.md":
            text = text.replace(configuration_section(), "")
        repeated = [name for name in table_rows() if re.search(rf"^\|\s*`{name}`\s*\|", text, re.M)]
        assert not repeated, f"{doc} has its own table rows for {repeated}: link to README"


def test_the_other_documents_link_to_the_table():
    for doc in LINKING_DOCUMENTS:
        text = (REPO_ROOT / doc).read_text()
        assert "README.md#configuration" in text, f"{doc} should link to README#configuration"
