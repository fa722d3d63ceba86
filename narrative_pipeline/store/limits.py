"""What the store server lets a client make it hold: limits, the memory budget, quiet logging.

The simd-r-drive protocol has no authentication (docs/SECURITY.md), so the server's defence is
to bound what any peer can cost it: connections (with eviction of the idlest when full, so a
flood of silent sockets cannot lock a good client out), time to finish the handshake, idle time,
bytes of unfinished calls per connection, and bytes held across all connections. Every limit has
a default and a `store serve` option; the table of them is in docs/SECURITY.md.

`QuietLog` keeps a flood of identical problems (1,100 silent connections, say) from writing a
traceback each: per kind of message, a few lines per window, then one count of what was dropped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import time
from dataclasses import dataclass, field

MIB = 1024 * 1024
MAX_MESSAGE_SIZE = 256 * MIB
MAX_CONNECTIONS = 1024
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 3600.0
MEMORY_BUDGET = 1024 * MIB
FD_RESERVE = 64  # descriptors kept for the store file, logs, worker threads and accept()
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServerLimits:
    """Everything a peer is allowed; see docs/SECURITY.md for why each default."""

    max_message_size: int = MAX_MESSAGE_SIZE
    max_pending_bytes: int | None = None  # per connection; None = 2 x max_message_size
    memory_budget: int = MEMORY_BUDGET  # bytes of client input held across all connections
    max_connections: int = MAX_CONNECTIONS
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S
    idle_timeout: float | None = IDLE_TIMEOUT_S
    allow_origins: frozenset[str] = field(default_factory=frozenset)
    allow_from: tuple[Network, ...] = ()

    @property
    def pending_cap(self) -> int:
        if self.max_pending_bytes is not None:
            return self.max_pending_bytes
        return 2 * self.max_message_size

    def peer_allowed(self, host: str) -> bool:
        """Whether a peer address may connect (`--allow-from`; everyone when unset)."""
        if not self.allow_from:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow_from)

    def origin_allowed(self, origin: str | None) -> bool:
        """Non-browser clients send no Origin; a browser page's Origin must be listed."""
        return origin is None or origin in self.allow_origins or "*" in self.allow_origins


def parse_networks(text: str) -> tuple[Network, ...]:
    """`--allow-from 10.0.0.0/8,127.0.0.1`: comma-separated addresses or CIDR blocks."""
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"--allow-from: {part!r} is not an address or CIDR block: {exc}"
            ) from None
    return tuple(networks)


def parse_origins(text: str) -> frozenset[str]:
    """`--allow-origin https://a.example,https://b.example` (exact match, scheme and host)."""
    return frozenset(filter(None, (p.strip().rstrip("/") for p in text.split(","))))


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connections_that_fit(wanted: int, fd_limit: int) -> int:
    """`wanted` connections, or fewer when the descriptor limit cannot hold them all."""
    return max(1, min(wanted, fd_limit - FD_RESERVE))


class MemoryBudget:
    """Bytes of client input held by all connections together, against one cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0

    def change(self, delta: int) -> bool:
        """Record `delta` bytes more (or fewer); False when the total is now over the cap."""
        self.held += delta
        self.peak = max(self.peak, self.held)
        return self.held <= self.limit


class QuietLog:
    """A logger that writes at most `burst` lines per kind of message per `window` seconds."""

    def __init__(self, logger: logging.Logger, burst: int = 5, window: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self._counts: dict[str, tuple[float, int]] = {}

    def log(
        self, level: int, kind: str, message: str, *args: object, exc_info: bool = False
    ) -> None:
        now = time.monotonic()
        if kind in self._counts:
            self._end_window_if_over(kind, now)
        start, count = self._counts.get(kind, (now, 0))
        self._counts[kind] = (start, count + 1)
        if count < self.burst:
            self.logger.log(level, message, *args, exc_info=exc_info)

    def flush(self) -> None:
        """Report the counts of windows that have ended (the server calls this every second)."""
        now = time.monotonic()
        for kind in list(self._counts):
            self._end_window_if_over(kind, now)

    def _end_window_if_over(self, kind: str, now: float) -> None:
        start, count = self._counts[kind]
        if now - start < self.window:
            return
        if count > self.burst:
            self.logger.warning(
                "%d more %r messages in %.0f s were not logged",
                count - self.burst,
                kind,
                now - start,
            )
        del self._counts[kind]

    def warning(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, kind, message, *args)

    def info(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.INFO, kind, message, *args)
