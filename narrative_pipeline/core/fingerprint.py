"""What decides whether a source file must be loaded again: its (size, mtime, sha256).

Standard library only, so the CSV worker process can take fingerprints without importing the
database modules. The readers take them before reading; the database stores and compares them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

Fingerprint = tuple[int, float, str]  # (size in bytes, mtime in seconds, sha256 hex)


def file_fingerprint(path: str | Path) -> Fingerprint:
    """(size, mtime, sha256 hex) of a file."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return stat.st_size, stat.st_mtime, digest.hexdigest()
