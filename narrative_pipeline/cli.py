"""The `narrative-pipeline` command line: one sub-command group per layer, registered lazily."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# group name -> module exposing `register(subparsers)`; each layer owns its own commands.
COMMAND_GROUPS = {
    "store": "narrative_pipeline.store.cli",
    "taxonomy": "narrative_pipeline.db.cli",
    "ingest": "narrative_pipeline.ingest_cli",
    "train": "narrative_pipeline.training.cli",
    "demo": "narrative_pipeline.demo",
    "sample": "narrative_pipeline.sample_data",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; when argv names a group, only that group's module is imported.

    Groups import heavy libraries (torch, Dagster); `store serve` must start in well under a second.
    """
    parser = argparse.ArgumentParser(prog="narrative-pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="group", required=True)
    chosen = [COMMAND_GROUPS[a] for a in (argv or []) if a in COMMAND_GROUPS][:1]
    for module_name in chosen or COMMAND_GROUPS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # group not built yet; the others still work
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster's instance migrations
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
