"""Caps on what one input file can make ingestion allocate (issue 12: a 1.5 MB `.json.gz`
decompressed to gigabytes).

Two limits, each an environment variable (README's Configuration table):
- NARRATIVE_MAX_DOCUMENT_MB (default 256): bytes of one document after decompression: a CSV
  file, a companyfacts `.json`, the decompressed `.json.gz`, one member of a bulk zip. The
  largest real companyfacts documents are a few tens of MB; parsing JSON into Python objects
  takes roughly ten times the text, so the default keeps one document under ~3 GB.
- NARRATIVE_MAX_LINE_KB (default 1024): bytes of one CSV line (a sec-fetcher row of ~500
  cells is ~15 KB).

`held_back_reason` also refuses a CSV cut mid-way or with an unbalanced quote (issue 12).

Compressed input is decompressed as a stream and stopped one chunk after the cap, so memory
stays near the cap whatever the compression ratio; the error names the file and the limit.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

MIB = 1 << 20
DEFAULT_MAX_DOCUMENT_MB = 256
DEFAULT_MAX_LINE_KB = 1024
CHUNK = MIB


class InputTooLarge(ValueError):
    """A document or line over its configured cap (the message names the file and the cap)."""


def _env_number(raw: str | None, name: str, default: float) -> float:
    """A positive number from the environment variable `name` (`raw`: its value)."""
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def max_document_bytes() -> int:
    """NARRATIVE_MAX_DOCUMENT_MB in bytes."""
    raw = os.environ.get("NARRATIVE_MAX_DOCUMENT_MB")
    return int(_env_number(raw, "NARRATIVE_MAX_DOCUMENT_MB", DEFAULT_MAX_DOCUMENT_MB) * MIB)


def max_line_bytes() -> int:
    """NARRATIVE_MAX_LINE_KB in bytes."""
    raw = os.environ.get("NARRATIVE_MAX_LINE_KB")
    return int(_env_number(raw, "NARRATIVE_MAX_LINE_KB", DEFAULT_MAX_LINE_KB) * 1024)


def too_large(source: str, limit: int) -> InputTooLarge:
    """The error for a document over the cap (names the file, the cap and its variable)."""
    return InputTooLarge(
        f"{source}: over {limit / MIB:g} MiB once decompressed (NARRATIVE_MAX_DOCUMENT_MB); "
        "not read"
    )


class Readable(Protocol):
    """A binary stream: a file, a GzipFile, a zip member."""

    def read(self, size: int = -1, /) -> bytes: ...


def read_stream_capped(stream: Readable, source: str, limit: int | None = None) -> bytes:
    """The whole stream, read in chunks; InputTooLarge as soon as it passes `limit` bytes
    (so a decompression bomb costs at most `limit` plus one chunk)."""
    limit = max_document_bytes() if limit is None else limit
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            raise too_large(source, limit)
        parts.append(chunk)


def read_file_capped(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """A plain file's bytes, refused (InputTooLarge) before reading when it is over `limit`."""
    limit = max_document_bytes() if limit is None else limit
    if os.stat(path).st_size > limit:
        raise too_large(str(path), limit)
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)  # one allocation (the file may have grown since the stat)
    if len(data) > limit:
        raise too_large(str(path), limit)
    return data


def longest_line(data: bytes) -> tuple[int, int]:
    """(length in bytes, 1-based line number) of the longest line (vectorised)."""
    if not data:
        return 0, 1
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    bounds = np.concatenate([[-1], ends, [len(data)]])
    lengths = np.diff(bounds) - 1
    line = int(np.argmax(lengths))
    return int(lengths[line]), line + 1


def check_line_length(data: bytes, source: str, limit: int | None = None) -> None:
    """InputTooLarge naming the line when one line of `data` is longer than `limit` bytes."""
    limit = max_line_bytes() if limit is None else limit
    length, line = longest_line(data)
    if length > limit:
        raise InputTooLarge(
            f"{source}: line {line} is {length} bytes, over {limit // 1024} KiB "
            "(NARRATIVE_MAX_LINE_KB); not read"
        )


def held_back_reason(data: bytes, source: str) -> str | None:
    """Why a CSV must be held back whole, or None: its last line has no newline (cut mid-way:
    sec-fetcher ends every row with one), an odd number of double quotes (one unbalanced quote
    swallows the rest of the file), or a line over its cap."""
    if not data.endswith(b"\n"):
        tail = data.rsplit(b"\n", 1)[-1][-40:].decode("utf-8", "replace")
        return f"ends in a torn line (no newline after {tail!r}): the file looks cut mid-way"
    if data.count(b'"') % 2:
        return "unbalanced double quote: the rest of the file would be read as one field"
    try:
        check_line_length(data, source)
    except InputTooLarge as exc:
        return str(exc)
    return None
