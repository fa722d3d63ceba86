"""What the landing folder (NARRATIVE_CSV_DIR) accepts, and which of its files are which kind.

The folder, searched recursively, takes:
- sec-fetcher CSVs, `*.csv` (either layout; read by sec_fetcher_csv.py);
- SEC companyfacts, `*.json` and `*.json.gz` (one company each) and `*.zip` (the bulk
  `companyfacts.zip`, read member by member, never extracted; companyfacts.py).
Names starting with a dot and temporary names (TEMPORARY_SUFFIXES) are never landing files, so a
writer that writes then renames is seen once complete. The raw_records asset, the sensor and the
"is the folder empty?" test of the sample generator all ask this module, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CSV_SUFFIXES = (".csv",)
COMPANYFACTS_SUFFIXES = (".json", ".json.gz", ".zip")
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


def _usable(name: str) -> bool:
    lower = name.lower()
    return not name.startswith(".") and not lower.endswith(TEMPORARY_SUFFIXES)


def is_csv_name(name: str) -> bool:
    """A sec-fetcher CSV the landing folder takes."""
    return _usable(name) and name.lower().endswith(CSV_SUFFIXES)


def is_companyfacts_name(name: str) -> bool:
    """A companyfacts document or bulk archive the landing folder takes."""
    return _usable(name) and name.lower().endswith(COMPANYFACTS_SUFFIXES)


def is_landing_name(name: str) -> bool:
    """Any file the landing folder takes."""
    return is_csv_name(name) or is_companyfacts_name(name)


@dataclass
class LandingFiles:
    """The landing files under a folder, by kind, each list sorted."""

    csv: list[Path] = field(default_factory=list)
    companyfacts: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.csv) + len(self.companyfacts)


def landing_files(folder: str | Path) -> LandingFiles:
    """The landing files under `folder` (recursive); none when it does not exist."""
    root = Path(folder)
    found = LandingFiles()
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        if is_csv_name(path.name) and path.is_file():
            found.csv.append(path)
        elif is_companyfacts_name(path.name) and path.is_file():
            found.companyfacts.append(path)
    return found
