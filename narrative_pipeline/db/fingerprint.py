"""Re-export: the file fingerprint lives in `narrative_pipeline.core.fingerprint` (shared by the
readers, the CSV worker and the database); this name stays for existing imports."""

from narrative_pipeline.core.fingerprint import Fingerprint, file_fingerprint

__all__ = ["Fingerprint", "file_fingerprint"]
