"""What decides whether a source file must be loaded again (standard library only, so the CSV
worker process can take fingerprints without importing the database modules)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_fingerprint(path: str | Path) -> tuple[int, float, str]:
    """(size, mtime, sha256 hex) of a file."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return stat.st_size, stat.st_mtime, digest.hexdigest()
