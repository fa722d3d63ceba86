"""`narrative-pipeline store ...`: check (verify, report, recover) and compact a store file.

Each sub-command is one `add_*_command(subparsers)` function listed in STORE_COMMANDS, so a new
one (e.g. `serve`) is a function plus one list entry.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from narrative_pipeline.store.errors import StoreError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `store` group and its sub-commands to the top-level parser."""
    parser = subparsers.add_parser("store", help="embedded simd-r-drive store tools")
    commands = parser.add_subparsers(dest="store_command", required=True)
    for add_command in STORE_COMMANDS:
        add_command(commands)


def add_check_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check",
        help="verify a store file: entries, live keys, dead bytes, CRCs, torn tail",
        description="Verify every entry's chain link and CRC-32 and report; never writes "
        "unless --recover is given.",
    )
    parser.add_argument("path", type=Path)
    parser.add_argument(
        "--recover",
        action="store_true",
        help="cut the file back to its last valid entry (no size limit)",
    )
    parser.add_argument("--no-crc", action="store_true", help="skip the full CRC pass (faster)")
    parser.set_defaults(func=run_check)


def add_compact_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compact", help="rewrite a store with only the newest live entry of each key"
    )
    parser.add_argument("path", type=Path)
    parser.set_defaults(func=run_compact)


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """`store serve PATH --host --port`: the WebSocket server (defined in store/serve.py)."""
    from narrative_pipeline.store.serve import add_serve_command as add_server_parser

    add_server_parser(commands)


STORE_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_check_command,
    add_compact_command,
    add_serve_command,
]


def run_check(args: argparse.Namespace) -> int:
    """Print the report; exit 0 when the file is clean (or was recovered), 1 otherwise."""
    from narrative_pipeline.store.datastore import DataStore
    from narrative_pipeline.store.recovery import inspect_store

    try:
        report = inspect_store(args.path, verify_crc=not args.no_crc)
    except StoreError as exc:
        print(f"error: {exc}")
        return 1
    for line in report.lines():
        print(line)
    if args.recover and report.dropped_bytes:
        with DataStore(args.path, max_recover_bytes=None) as store:
            print(
                f"recovered: truncated {report.dropped_bytes} bytes; file is now {store.file_size()} bytes"
            )
        return 0
    if report.dropped_bytes:
        print("run again with --recover to cut the file back to its last valid entry")
    return 0 if report.clean else 1


def run_compact(args: argparse.Namespace) -> int:
    from narrative_pipeline.store.datastore import DataStore

    if not args.path.is_file():
        print(f"error: {args.path}: no such store file")
        return 1
    try:
        with DataStore(args.path) as store:
            result = store.compact()
    except StoreError as exc:
        print(f"error: {exc}")
        return 1
    saved = result.size_before - result.size_after
    print(f"{os.fspath(args.path)}: {result.live_entries} live entries")
    print(f"size before: {result.size_before} bytes")
    print(f"size after:  {result.size_after} bytes (saved {saved})")
    return 0
