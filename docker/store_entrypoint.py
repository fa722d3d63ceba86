"""Entry point of the store image: the `narrative-pipeline store ...` commands and nothing else.

`narrative-pipeline` imports every command group to build its parser, and the other groups need
pandas, SQLAlchemy or torch, which the store image leaves out to stay small. This builds the same
parser with only the store group, through the same `register(subparsers)` contract, so
`store_entrypoint.py store serve PATH --host H --port N` behaves exactly like
`narrative-pipeline store serve PATH --host H --port N`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from narrative_pipeline.store import cli as store_cli


def build_parser() -> argparse.ArgumentParser:
    """The `narrative-pipeline` parser restricted to the store command group."""
    parser = argparse.ArgumentParser(prog="narrative-pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    store_cli.register(parser.add_subparsers(dest="group", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
