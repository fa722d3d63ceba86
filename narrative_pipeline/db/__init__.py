"""The US-GAAP database (taxonomy + raw filings and facts) on SQLite or MySQL/MariaDB."""

from narrative_pipeline.db.database import (
    DbUsGaap,
    SourceFileState,
    file_fingerprint,
    resolve_url,
)

__all__ = ["DbUsGaap", "SourceFileState", "file_fingerprint", "resolve_url"]
