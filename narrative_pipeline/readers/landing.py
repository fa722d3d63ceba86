"""What the landing folder (NARRATIVE_CSV_DIR) takes, which kind each file is, and why the
other entries are skipped.

The folder, searched recursively, takes:
- sec-fetcher CSVs, `*.csv` (either layout; read by sec_fetcher_csv.py);
- SEC companyfacts, `*.json` and `*.json.gz` (one company each) and `*.zip` (the bulk
  `companyfacts.zip`, read member by member, never extracted; companyfacts.py).
Temporary names (TEMPORARY_SUFFIXES, e.g. `X.csv.part`) never end with a landing suffix, so a
writer that writes then renames is seen once complete. The raw_records asset, the sensor, the
readers and the "is the folder empty?" test of the sample generator all ask this module, so
they agree.

The folder is walked without following links to folders. An entry with a wanted suffix is
taken when it is a regular file (or a link to one inside the folder); otherwise it is skipped
WITH a reason the caller reports (issue 12: these used to vanish silently):
- a name that is only the suffix (`.csv`) or starts with a dot (hidden, editor or temp file);
- a folder named like a file (`X.csv/`);
- a FIFO, socket or device (reading a FIFO would block the run);
- a dangling link;
- a link out of the landing folder (not followed: the folder is what the operator controls);
- in marker mode, a file whose marker is missing or older than the file.

Marker mode (NARRATIVE_LANDING_MARKER, README's Configuration table), for writers that cannot
write-then-rename: `.done` (starting with a dot) means `X.csv` is taken only once `X.csv.done`
exists; any other name (e.g. `_SUCCESS`) means every file of a folder is taken only once that
file exists in the folder. The marker must be at least as new as the file (a rewrite needs a
new marker). The sensor and raw_records both honour it, so a run started for one file never
reads another one half-written.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

CSV_SUFFIXES = (".csv",)
COMPANYFACTS_SUFFIXES = (".json", ".json.gz", ".zip")
LANDING_SUFFIXES = CSV_SUFFIXES + COMPANYFACTS_SUFFIXES
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


def _usable(name: str) -> bool:
    lower = name.lower()
    return not name.startswith(".") and not lower.endswith(TEMPORARY_SUFFIXES)


def is_csv_name(name: str) -> bool:
    """A sec-fetcher CSV the landing folder takes (by name)."""
    return _usable(name) and name.lower().endswith(CSV_SUFFIXES)


def is_companyfacts_name(name: str) -> bool:
    """A companyfacts document or bulk archive the landing folder takes (by name)."""
    return _usable(name) and name.lower().endswith(COMPANYFACTS_SUFFIXES)


def is_landing_name(name: str) -> bool:
    """Any file the landing folder takes (by name)."""
    return is_csv_name(name) or is_companyfacts_name(name)


@dataclass
class LandingScan:
    """The files to read (sorted) and the entries skipped, with their reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def messages(self) -> list[str]:
        return [f"skipped {path}: {reason}" for path, reason in self.skipped]


@dataclass
class LandingFiles:
    """The landing files under a folder, by kind (each list sorted), and the skipped entries."""

    csv: list[Path] = field(default_factory=list)
    companyfacts: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.csv) + len(self.companyfacts)

    def messages(self) -> list[str]:
        return LandingScan(skipped=self.skipped).messages()


def landing_marker() -> str | None:
    """NARRATIVE_LANDING_MARKER, or None (no marker mode)."""
    return os.environ.get("NARRATIVE_LANDING_MARKER") or None


def _marker_of(path: Path, marker: str) -> Path:
    return path.with_name(path.name + marker) if marker.startswith(".") else path.parent / marker


def _waiting_for_marker(path: Path, marker: str) -> str | None:
    """Why a regular file is not taken yet in marker mode, or None when its marker is there."""
    marker_path = _marker_of(path, marker)
    try:
        marked = os.stat(marker_path).st_mtime_ns >= os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return f"waiting for its marker {marker_path.name} (NARRATIVE_LANDING_MARKER)"
    if not marked:
        return f"changed after its marker {marker_path.name}: waiting for a new marker"
    return None


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _why_skipped(path: Path, root: Path) -> str | None:
    """None when `path` (named with a wanted suffix) is a regular file to read."""
    if path.name.startswith("."):
        return "hidden or nameless file (name starts with '.')"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "removed while listing"
    if stat.S_ISLNK(mode):
        if not path.exists():
            return "dangling link"
        if not _is_inside(path.resolve(), root):
            return f"link out of the landing folder (to {path.resolve()}): not followed"
        mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        return "a folder named like a file"
    if not stat.S_ISREG(mode):
        return "not a regular file (FIFO, socket or device)"
    return None


def scan_landing(
    root: str | Path, suffixes: tuple[str, ...], marker: str | None = None
) -> LandingScan:
    """Entries under `root` (recursive, links to folders not followed) whose name ends with
    one of `suffixes` (case-insensitive): the regular files, and the others with a reason.
    `root` itself may be a single file. `marker`: see the module docstring (None: the
    NARRATIVE_LANDING_MARKER setting; "": no marker mode)."""
    root = Path(root)
    marker = landing_marker() if marker is None else (marker or None)
    scan = LandingScan()
    if root.is_file():
        scan.files.append(root)
        return scan
    real_root = root.resolve()
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in [*names, *dirs]:
            if not name.lower().endswith(suffixes):
                continue
            path = Path(folder) / name
            reason = _why_skipped(path, real_root)
            if reason is None and marker:
                reason = _waiting_for_marker(path, marker)
            if reason is None:
                scan.files.append(path)
            else:
                scan.skipped.append((path, reason))
    scan.files.sort()
    scan.skipped.sort()
    return scan


def landing_files(folder: str | Path, marker: str | None = None) -> LandingFiles:
    """The landing files under `folder` (recursive) by kind, with the skipped entries; none
    when it does not exist. `marker`: as scan_landing."""
    root = Path(folder)
    found = LandingFiles()
    if not root.is_dir():
        return found
    scan = scan_landing(root, LANDING_SUFFIXES, marker)
    for path in scan.files:
        (found.csv if is_csv_name(path.name) else found.companyfacts).append(path)
    found.skipped = scan.skipped
    return found
