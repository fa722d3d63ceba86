"""The ingestion asset: the landing folder NARRATIVE_CSV_DIR -> filings and facts in the database.

The folder takes sec-fetcher CSVs and SEC companyfacts (`.json`, `.json.gz`, the bulk
`companyfacts.zip`): readers/landing.py says which files are which.

Unpartitioned on purpose: every later step (pairs, scalers, PCA, triplet ids) is global over all
tickers, so per-ticker partitions would fan in to one computation anyway; incremental loading is
done per file by the database's `source_file` bookkeeping instead (unchanged files are skipped,
a changed file replaces its own filings in one transaction). A file that fails (unreadable, torn,
no usable filing, would drop filings it supplied before) keeps the stored data, is not counted as
loaded, and is listed in the `failed_files_table` metadata.
"""

# No `from __future__ import annotations`: Dagster reads the Config/resource annotations at runtime.

import os
from pathlib import Path

import dagster as dg

from narrative_pipeline.assets.metadata import PREVIEW_ROWS, markdown_table, report_metadata, timed
from narrative_pipeline.db.protocol import FactSourceAndTarget
from narrative_pipeline.readers.landing import LandingFiles, landing_files
from narrative_pipeline.resources import DatabaseResource, PathsResource, StoreResource
from narrative_pipeline.sample_data import ensure_sample_csvs
from narrative_pipeline.us_gaap import UsGaapStore
from narrative_pipeline.us_gaap.ingest import Progress
from narrative_pipeline.us_gaap.reports import IngestReport

INGESTION_GROUP = "ingestion"
# Fields of IngestReport about the downstream steps, which this asset never runs (downstream=False).
IGNORED_REPORT_FIELDS = (
    "skipped_files",
    "triplets",
    "pairs",
    "downstream_ran",
    "triplets_per_second",
    "pairs_report",
    "embedding_report",
    "scaler_report",
    "pca_report",
    "triplet_report",
)


def database_kind() -> str:
    """'mysql' or 'sqlite' for the UI's kind badge, from the URL the deployment configures."""
    url = os.environ.get("NARRATIVE_DB_URL", "")
    return "mysql" if url.startswith("mysql") or os.environ.get("MYSQL_HOST") else "sqlite"


# IngestReport fields that add up over the two kinds of landing files.
ADDITIVE_REPORT_FIELDS = (
    "files_seen",
    "files_loaded",
    "files_unchanged",
    "skipped_files",
    "facts_written",
    "conflicting_facts",
    "skipped_cells",
    "non_numeric_units",
    "skipped_columns",
    "messages",
    "timings",
)


class RawRecordsConfig(dg.Config):
    """Ingestion settings."""

    generate_sample_when_empty: bool = True  # write the project's sample CSVs into an empty folder
    # A changed file may drop filings it supplied before (held back by default: sec-fetcher files
    # only grow, so a shorter file is usually cut or broken).
    allow_shrink: bool = False
    # Forget source files gone from the folder and delete the filings no other file holds (a
    # deleted file alone never drops data).
    prune_missing_sources: bool = False


def ingest_landing_files(
    us_gaap_store: UsGaapStore,
    folder: Path,
    files: LandingFiles,
    db: FactSourceAndTarget,
    progress: Progress | None,
    allow_shrink: bool = False,
) -> IngestReport:
    """The folder's CSVs, then its companyfacts files, into the database (downstream steps not
    run); one IngestReport for both. Stored filings are never lost (db/sources.py): a filing
    held by both kinds keeps the facts of both, the companyfacts value winning where they
    differ (read last). Skipped entries are reported by each kind's own scan."""
    reports = []
    if files.csv:
        reports.append(
            us_gaap_store.ingest_us_gaap_csvs(
                folder, db, downstream=False, progress=progress, allow_shrink=allow_shrink
            )
        )
    if files.companyfacts:
        reports.append(
            us_gaap_store.ingest_companyfacts(
                folder, db, downstream=False, progress=progress, allow_shrink=allow_shrink
            )
        )
    return merged_reports(reports)


def merged_reports(reports: list[IngestReport]) -> IngestReport:
    """The first report with the file-step figures (ADDITIVE_REPORT_FIELDS) of the others
    added: numbers summed, lists joined, dicts of numbers summed per key. Store totals (live
    triplets, pairs) describe the store, not a step, so they are taken from the first."""
    merged = reports[0]
    for report in reports[1:]:
        for name in ADDITIVE_REPORT_FIELDS:
            mine, theirs = getattr(merged, name), getattr(report, name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(merged, name, mine + theirs)
    return merged


@dg.asset(
    group_name=INGESTION_GROUP,
    kinds={"python", database_kind()},
    description=(
        "Filings and numeric facts of every sec-fetcher CSV and SEC companyfacts file (.json, "
        ".json.gz, companyfacts.zip) in NARRATIVE_CSV_DIR, loaded into the database incrementally "
        "(unchanged files skipped; a failed file never loses stored data). A folder with none of "
        "them gets the project's generated sample CSVs first."
    ),
)
def raw_records(
    context: dg.AssetExecutionContext,
    config: RawRecordsConfig,
    paths: PathsResource,
    database: DatabaseResource,
    store: StoreResource,
) -> dg.MaterializeResult:
    csv_dir = paths.csv_path
    generated = ensure_sample_csvs(csv_dir) if config.generate_sample_when_empty else []
    if generated:
        context.log.info("CSV folder %s was empty: wrote %d sample files", csv_dir, len(generated))
    files = landing_files(csv_dir)
    if not len(files):
        # Entries skipped (hidden, not regular files, waiting for their marker) say why.
        skipped = "".join(f"; {message}" for message in files.messages()[:20])
        raise dg.Failure(
            f"no CSV files in {csv_dir}, nor companyfacts (.json, .json.gz, .zip) files "
            f"(set NARRATIVE_CSV_DIR){skipped}"
        )
    context.log.info(
        "ingesting %d CSV and %d companyfacts file(s) from %s into %s",
        len(files.csv),
        len(files.companyfacts),
        csv_dir,
        database.describe(),
    )
    db = database.get_db()
    metadata: dict = {
        "csv_dir": dg.MetadataValue.path(str(csv_dir)),
        "csv_files": len(files.csv),
        "companyfacts_files": len(files.companyfacts),
    }

    def progress(done: int, total: int, path: str) -> None:
        # About every 5%: a line per file would bury the run's log under thousands of tickers.
        if done == total or done % max(1, total // 20) == 0:
            context.log.info("file %d/%d (%.0f%%): %s", done, total, 100 * done / total, path)

    if config.prune_missing_sources:
        metadata["pruned"] = dg.MetadataValue.json(db.prune_missing_sources())
    with timed(metadata, "ingest_seconds"), store.us_gaap_store() as us_gaap_store:
        report = ingest_landing_files(
            us_gaap_store, csv_dir, files, db, progress, allow_shrink=config.allow_shrink
        )
    metadata.update(report_metadata(report, skip=IGNORED_REPORT_FIELDS))
    metadata["failed_files"] = len(report.skipped_files)
    metadata["failed_files_table"] = markdown_table(
        ["file", "reason (stored data kept)"], [(f.path, f.reason) for f in report.skipped_files]
    )
    metadata["sample_generated"] = bool(generated)
    metadata["database"] = database.describe()
    metadata["facts_in_database"] = int(db.fact_count())
    tickers = sorted(db.tickers())
    metadata["tickers"] = dg.MetadataValue.json(tickers)
    preview = db.facts_frame(tickers=tickers[:1]).head(PREVIEW_ROWS)
    metadata["preview"] = markdown_table(list(preview.columns), preview.itertuples(index=False))
    for failed in report.skipped_files:
        context.log.warning("FAILED %s: %s", failed.path, failed.reason)
    context.log.info(
        "loaded %d file(s), %d unchanged, %d failed; database holds %d facts for %d ticker(s)",
        report.files_loaded,
        report.files_unchanged,
        len(report.skipped_files),
        metadata["facts_in_database"],
        len(tickers),
    )
    return dg.MaterializeResult(metadata=metadata)
