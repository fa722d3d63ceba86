"""`narrative-pipeline ingest`: files -> database -> UsGaapStore (pairs, embeddings, scalers, PCA, triplets).

    narrative-pipeline ingest CSV_DIR [--db URL] [--store PATH | --server HOST:PORT]
                                      [--companyfacts PATH] [--scaler robust|quantile] ...

The store is the embedded file `$NARRATIVE_DATA_DIR/narrative_store.bin` unless `--store` names
another file or `--server` (or SIMD_R_DRIVE_SERVER_HOST/PORT) points at a simd-r-drive server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STORE_FILE_NAME = "narrative_store.bin"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `ingest` command to the top-level parser."""
    parser = subparsers.add_parser(
        "ingest",
        help="load sec-fetcher CSVs / companyfacts into the database and build the UsGaapStore",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "csv_dir", nargs="?", type=Path, help="folder of sec-fetcher CSVs (searched recursively)"
    )
    parser.add_argument(
        "--db",
        help="SQLAlchemy URL (default: NARRATIVE_DB_URL, MYSQL_* or SQLite in the data folder)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--store",
        type=Path,
        help=f"embedded store file (default $NARRATIVE_DATA_DIR/{STORE_FILE_NAME})",
    )
    where.add_argument("--server", help="HOST:PORT of a simd-r-drive WebSocket server")
    parser.add_argument(
        "--companyfacts",
        type=Path,
        help="companyfacts .json/.json.gz file, folder, or companyfacts.zip",
    )
    parser.add_argument(
        "--scaler", choices=("robust", "quantile"), default="robust", help="per-pair scaler"
    )
    parser.add_argument(
        "--embedding-model",
        help="sentence-transformers name or path (default: packaged all-MiniLM-L6-v2)",
    )
    components = parser.add_mutually_exclusive_group()
    components.add_argument(
        "--pca-variance", type=float, default=0.95, help="explained variance to keep (default 0.95)"
    )
    components.add_argument("--pca-components", type=int, help="fixed number of PCA components")
    parser.add_argument("--plot-dir", type=Path, help="write the PCA plots (PNG) here")
    parser.add_argument(
        "--files-only", action="store_true", help="only load files into the database (step 1)"
    )
    parser.add_argument(
        "--allow-shrink",
        action="store_true",
        help="let a changed file drop filings it supplied before (held back by default: "
        "sec-fetcher files only grow, so a shorter file is usually cut or broken)",
    )
    parser.add_argument(
        "--prune-missing",
        action="store_true",
        help="first forget source files gone from disk and delete the filings no other "
        "file holds (a missing file alone never drops data)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_ingest)


def _server_address(arg: str | None) -> tuple[str, int] | None:
    text = arg or (
        f"{os.environ['SIMD_R_DRIVE_SERVER_HOST']}:{os.environ.get('SIMD_R_DRIVE_SERVER_PORT', '')}"
        if os.environ.get("SIMD_R_DRIVE_SERVER_HOST")
        else None
    )
    if text is None:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--server must be HOST:PORT, got {text!r}")
    return host, int(port)


@contextlib.contextmanager
def open_store(path: Path | None, server: str | None) -> Iterator[tuple[Any, str]]:
    """(store handle, description): a server when asked for, else the embedded file."""
    address = None if path else _server_address(server)
    if address:
        from narrative_pipeline.store import DataStoreWsClient

        handle: Any = DataStoreWsClient(*address)
        description = f"ws://{address[0]}:{address[1]}"
    else:
        from narrative_pipeline.store import DataStore

        path = path or Path(os.environ.get("NARRATIVE_DATA_DIR", "data")) / STORE_FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = DataStore(path)
        description = str(path)
    try:
        yield handle, description
    finally:
        close = getattr(handle, "close", None)
        if callable(close):
            close()


def _progress_bar(disabled: bool):
    """A progress callback driving one tqdm bar over files, and the bar (to close)."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", desc="files", disable=disabled, file=sys.stderr)

    def update(done: int, total: int, path: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(Path(path).name, refresh=False)
        bar.refresh()

    return update, bar


def _print_report(report: Any) -> None:
    if report.files_seen or report.source != "database":
        _print_files(report)
    _print_store(report)


def _print_files(report: Any) -> None:
    print(
        f"{report.source}: {report.files_seen} files, {report.files_loaded} loaded, "
        f"{report.files_unchanged} unchanged, {len(report.skipped_files)} failed; "
        f"{report.facts_written} facts written, {report.skipped_cells} cells skipped"
    )
    if report.conflicting_facts:
        print(f"  {report.conflicting_facts} facts differ between sources of the same filing")
    for skipped in report.skipped_files[:20]:
        print(f"  FAILED {skipped.path}: {skipped.reason}")
    if report.non_numeric_units:
        units = ", ".join(f"{u} ({n})" for u, n in sorted(report.non_numeric_units.items())[:10])
        print(f"  non-numeric units: {units}")
    for message in report.messages[:20]:
        print(f"  {message}")


def _print_store(report: Any) -> None:
    if report.downstream_ran:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items())
        print(f"  store: {report.triplets} triplets, {report.pairs} pairs ({timings})")
        if report.embedding_report:
            e = report.embedding_report
            print(f"  embeddings: {e.embedded} embedded, {e.cache_hits} from cache ({e.model})")
        if report.pca_report:
            print(
                f"  PCA: {report.pca_report.n_components} components, {report.pca_report.explained_variance:.3f} of variance"
            )
            for path in report.pca_report.plot_paths:
                print(f"  plot: {path}")
    elif report.source == "database" and report.triplets:
        print(f"nothing changed: the store already holds {report.triplets} triplets")


def run_ingest(args: argparse.Namespace) -> int:
    if args.csv_dir is None and args.companyfacts is None:
        raise SystemExit("give a CSV folder and/or --companyfacts PATH")
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.db.schema import DatabaseUnavailable
    from narrative_pipeline.us_gaap_store import UsGaapStore

    try:
        db = DbUsGaap(args.db)
    except DatabaseUnavailable as exc:
        raise SystemExit(f"narrative-pipeline ingest: {exc}") from None
    if args.prune_missing:
        pruned = db.prune_missing_sources()
        print(
            f"pruned {pruned['sources']} missing source(s): "
            f"{pruned['filings_deleted']} filings no other file holds deleted"
        )
    options = {
        "scaler_kind": args.scaler,
        "embedding_model": args.embedding_model,
        "pca_variance": args.pca_variance,
        "pca_components": args.pca_components,
        "plot_dir": args.plot_dir,
    }
    sources = [("csv", args.csv_dir)] if args.csv_dir else []
    sources += [("companyfacts", args.companyfacts)] if args.companyfacts else []
    with open_store(args.store, args.server) as (handle, description):
        store = UsGaapStore(handle)
        loaded = failed = 0
        for kind, source in sources:
            progress, bar = _progress_bar(args.no_progress)
            ingest = store.ingest_us_gaap_csvs if kind == "csv" else store.ingest_companyfacts
            try:
                report = ingest(
                    source,
                    db,
                    downstream=False,
                    progress=progress,
                    allow_shrink=args.allow_shrink,
                )
            finally:
                bar.close()
            loaded += report.files_loaded
            failed += len(report.skipped_files)
            _print_report(report)
        if not args.files_only:  # steps 2-6 once, over everything loaded
            _print_report(store.build_from_db(db, force=loaded > 0, **options))
        print(f"store: {description}")
    if failed:
        print(f"{failed} file(s) failed: their stored data was kept (see FAILED above)")
    return 1 if failed else 0
