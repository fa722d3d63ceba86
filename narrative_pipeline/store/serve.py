"""The `store serve` command: its options, the limits they set, and running the server.

Also `python -m narrative_pipeline.store.serve PATH ...` (the same arguments without the full
CLI, which imports torch/lightning and costs seconds per start). Every limit option and its
default is listed once, in docs/SECURITY.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from narrative_pipeline.store import limits as lim
from narrative_pipeline.store.server import PING_INTERVAL_S, run_server

log = logging.getLogger(__name__)


def add_serve_command(subparsers: Any) -> None:
    """Register `store serve PATH --host --port ...` (mirrors `simd-r-drive-ws-server`)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a store file over WebSocket (simd-r-drive protocol, path /ws)",
        description="Serve a simd-r-drive store file to the official client and ours. "
        "The protocol has no authentication: see docs/SECURITY.md before binding beyond loopback.",
    )
    parser.add_argument("path", help="store file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--fsync", action="store_true", help="fsync every write batch before answering"
    )
    _add_limit_options(parser)
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=PING_INTERVAL_S,
        help="seconds between WebSocket pings to each client, 0 = none (default 5, as the reference)",
    )
    parser.add_argument(
        "--compact-ratio",
        type=float,
        default=None,
        help="compact the file (in a worker thread) once it exceeds this multiple of its live "
        "bytes with >= 1 MiB dead (default 1.5, as DataStore; 0 = never)",
    )
    parser.set_defaults(func=serve_command)


# (option, type, default, help): every limit's option; docs/SECURITY.md is their table.
_LIMIT_OPTIONS: tuple[tuple[str, type, object, str], ...] = (
    (
        "--max-message-mib",
        int,
        lim.MAX_MESSAGE_SIZE // lim.MIB,
        "largest accepted WebSocket message / call in MiB (default 256)",
    ),
    (
        "--max-pending-mib",
        int,
        None,
        "bytes of unfinished calls one connection may hold (default 2 x --max-message-mib)",
    ),
    (
        "--memory-budget-mib",
        int,
        lim.MEMORY_BUDGET // lim.MIB,
        "bytes of unfinished client input held across all connections (default 1024)",
    ),
    (
        "--max-connections",
        int,
        lim.MAX_CONNECTIONS,
        "open connections; when full the idlest is dropped (default 1024, lowered to what the "
        "descriptor limit allows)",
    ),
    (
        "--handshake-timeout",
        float,
        lim.HANDSHAKE_TIMEOUT_S,
        "seconds a new connection has to complete its WebSocket handshake (default 10)",
    ),
    (
        "--idle-timeout",
        float,
        lim.IDLE_TIMEOUT_S,
        "drop a connection that sent nothing for this many seconds, 0 = never (default 3600)",
    ),
    (
        "--allow-origin",
        str,
        "",
        "comma-separated browser Origins allowed to connect (default none: any handshake "
        "carrying an Origin header is refused with 403)",
    ),
    (
        "--allow-from",
        str,
        "",
        "comma-separated client addresses / CIDR blocks allowed to connect (default any)",
    ),
)


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    for flag, kind, default, text in _LIMIT_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=text)


def limits_from_args(args: Any) -> lim.ServerLimits:
    """ServerLimits from parsed options, with max-connections sized to the descriptor limit."""
    mib = lim.MIB
    fd_limit = lim.raise_fd_limit()
    connections = lim.connections_that_fit(args.max_connections, fd_limit)
    if connections < args.max_connections:
        log.warning(
            "--max-connections %d lowered to %d: the process may open %d descriptors",
            args.max_connections,
            connections,
            fd_limit,
        )
    return lim.ServerLimits(
        max_message_size=args.max_message_mib * mib,
        max_pending_bytes=args.max_pending_mib * mib if args.max_pending_mib else None,
        memory_budget=args.memory_budget_mib * mib,
        max_connections=connections,
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout or None,
        allow_origins=lim.parse_origins(args.allow_origin),
        allow_from=lim.parse_networks(args.allow_from),
    )


def serve_command(args: Any) -> int:
    from narrative_pipeline.store.datastore import DEFAULT_COMPACT_RATIO, DataStore

    try:
        limits = limits_from_args(args)
    except ValueError as exc:
        print(f"store serve: {exc}", file=sys.stderr)
        return 2
    ratio = DEFAULT_COMPACT_RATIO if args.compact_ratio is None else args.compact_ratio or None
    # The server compacts in a worker thread after writes; the DataStore's own (inline) check is off.
    store = DataStore(args.path, fsync=args.fsync, compact_ratio=None)
    if ratio:
        _ = store.live_bytes  # count live bytes now (one pass) rather than in the first write call

    def announce(url: str) -> None:
        print(f"listening on {url}", flush=True)

    try:
        run_server(
            store,
            args.host,
            args.port,
            limits=limits,
            ping_interval=args.ping_interval or None,
            compact_ratio=ratio,
            on_ready=announce,
        )
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m narrative_pipeline.store.serve PATH ...`: the `store serve` command alone."""
    parser = argparse.ArgumentParser(prog="python -m narrative_pipeline.store.serve")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve_command(args)


if __name__ == "__main__":
    sys.exit(main())
