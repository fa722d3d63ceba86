"""Which source files the database has loaded (table `source_file`): what incremental
ingestion asks before reading a file again.

Owns: `SourceFileState`, recording a file (inside a fact write's transaction or alone), the
"unchanged since loaded" test (size and mtime, else content), forgetting files, and the
explicit sweep of files gone from disk. Which filing came from which file, and the rules
that keep a write from dropping stored filings, are db/sources.py's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from narrative_pipeline.core.fingerprint import file_fingerprint
from narrative_pipeline.db import sources
from narrative_pipeline.db.engine import Backend


@dataclass(frozen=True)
class SourceFileState:
    """What the database remembers of a loaded source file (for incremental ingestion)."""

    path: str
    ticker: str | None
    size: int
    mtime: float
    sha: str
    loaded_at: datetime | None = None


class SourceFiles:
    """The `source_file` table of one database."""

    def __init__(self, backend: Backend) -> None:
        self._db = backend

    def record_source_file(
        self,
        path: str | Path,
        size: int | None = None,
        mtime: float | None = None,
        sha: str | None = None,
        ticker: str | None = None,
    ) -> SourceFileState:
        """Remember a loaded file (fingerprinted now when size/mtime/sha are not given)."""
        key = path_key(path)
        if size is None or mtime is None or sha is None:
            size, mtime, sha = file_fingerprint(path)
        state = SourceFileState(key, ticker or Path(key).stem, int(size), float(mtime), sha)
        with self._db.transaction() as cur:
            record(cur, self._db.ph, state)
        return state

    def source_file_state(self) -> dict[str, SourceFileState]:
        """path -> what was recorded when it was last loaded."""
        rows = self._db.query("SELECT path, ticker, size, mtime, sha, loaded_at FROM source_file")
        return {
            r[0]: SourceFileState(r[0], r[1], int(r[2]), float(r[3]), r[4], _as_datetime(r[5]))
            for r in rows
        }

    def source_file_unchanged(self, path: str | Path) -> bool:
        """True when `path` was loaded and has the same size and mtime, or the same content."""
        key = path_key(path)
        rows = self._db.query("SELECT size, mtime, sha FROM source_file WHERE path = ?", (key,))
        return bool(rows) and _unchanged(path, *rows[0])

    def unchanged_source_files(self, paths: Sequence[str | Path]) -> list[bool]:
        """`source_file_unchanged` of each path, with one query for all of them."""
        if not paths:
            return []
        rows = self._db.query("SELECT path, size, mtime, sha FROM source_file")
        known = {r[0]: r[1:] for r in rows}
        return [
            (key := path_key(path)) in known and _unchanged(path, *known[key]) for path in paths
        ]

    def prune_missing_sources(self) -> dict[str, int]:
        """Forget source files gone from disk and delete the filings no other source holds
        (the explicit sweep; a missing file alone never drops data). Returns counts."""
        with self._db.transaction(writes_facts=True) as cur:
            return sources.prune_missing(cur, self._db.ph, self._db.is_sqlite)

    def forget_source_file(self, path: str | Path) -> None:
        with self._db.transaction() as cur:
            cur.execute(f"DELETE FROM source_file WHERE path = {self._db.ph}", (path_key(path),))


def record(cur: Any, ph: str, state: SourceFileState) -> None:
    """Record `state` with the cursor of the caller's transaction (a fact write's own)."""
    cur.execute(
        "REPLACE INTO source_file (path, ticker, size, mtime, sha, loaded_at) "
        f"VALUES ({ph},{ph},{ph},{ph},{ph},{ph})",
        (
            path_key(state.path),
            state.ticker,
            state.size,
            state.mtime,
            state.sha,
            datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        ),
    )


def _as_datetime(value: Any) -> datetime | None:
    """SQLite hands DATETIME back as text through the raw cursor; MySQL as datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _unchanged(path: str | Path, size: int, mtime: float, sha: str) -> bool:
    """The file has the recorded size and mtime, or the same content (touched only)."""
    stat = Path(path).stat()
    if stat.st_size != size:
        return False
    if stat.st_mtime == float(mtime):
        return True
    return file_fingerprint(path)[2] == sha


def path_key(path: str | Path) -> str:
    """The absolute path with symlinks resolved (the same file under any spelling); the
    folder's resolution is cached (a resolve costs an lstat per path component)."""
    path = os.path.abspath(path)
    if os.path.islink(path):
        return str(Path(path).resolve())
    folder, name = os.path.split(path)
    return os.path.join(_resolved_folder(folder), name)


@functools.lru_cache(maxsize=4096)
def _resolved_folder(folder: str) -> str:
    return str(Path(folder).resolve())
