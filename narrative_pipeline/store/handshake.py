"""The server side of the WebSocket opening handshake (RFC 6455 section 4.2), checked strictly.

A request becomes a 101 answer only if it is `GET /ws`, asks for `Upgrade: websocket` with a
`Connection` header listing `upgrade`, speaks `Sec-WebSocket-Version: 13`, carries a
`Sec-WebSocket-Key` of 16 base64 bytes, and carries no browser `Origin` that `--allow-origin`
does not list. The Origin rule is what stops a web page open in a local browser from writing to
the store: browsers always send Origin on WebSocket handshakes, programs (our client, the official
Rust client) do not.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from narrative_pipeline.store import websocket
from narrative_pipeline.store.limits import ServerLimits

WS_PATH = "/ws"
MAX_HANDSHAKE = 16 * 1024


@dataclass(frozen=True)
class Refusal:
    """An HTTP error answer: status, reason phrase, text for the client and the log."""

    status: int
    reason: str
    text: str
    extra_headers: str = ""

    def response(self) -> bytes:
        body = (self.text + "\n").encode()
        head = (
            f"HTTP/1.1 {self.status} {self.reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n{self.extra_headers}Connection: close\r\n\r\n"
        )
        return head.encode() + body


def parse_head(head: str) -> tuple[list[str], dict[str, str]]:
    """Request-line words and headers (names lower-cased; a repeated header's values joined)."""
    lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return lines[0].split(), headers


def answer(head: str, limits: ServerLimits) -> bytes | Refusal:
    """The 101 response for a valid upgrade request, or why it is refused."""
    request_line, headers = parse_head(head)
    if len(request_line) != 3 or request_line[0] != "GET":
        return Refusal(400, "Bad Request", f"expected a GET upgrade request, got {head[:80]!r}")
    if request_line[1].split("?", 1)[0] != WS_PATH:
        return Refusal(404, "Not Found", f"not found: the store is served at {WS_PATH}")
    origin = headers.get("origin")
    if not limits.origin_allowed(origin):
        return Refusal(
            403,
            "Forbidden",
            f"Origin {(origin or '')[:100]!r} is not allowed (browser pages may not use the store; "
            "the server's --allow-origin lists exceptions)",
        )
    connection_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "websocket" not in headers.get("upgrade", "").lower() or "upgrade" not in connection_tokens:
        return Refusal(
            426,
            "Upgrade Required",
            "this endpoint speaks WebSocket only (Upgrade: websocket, Connection: Upgrade)",
        )
    if headers.get("sec-websocket-version") != "13":
        return Refusal(
            426,
            "Upgrade Required",
            f"unsupported Sec-WebSocket-Version {headers.get('sec-websocket-version')!r}; need 13",
            "Sec-WebSocket-Version: 13\r\n",
        )
    key = headers.get("sec-websocket-key", "")
    if not _valid_key(key):
        return Refusal(400, "Bad Request", "missing or malformed Sec-WebSocket-Key")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + websocket.accept_key(key.encode()) + b"\r\n\r\n"
    )


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False
