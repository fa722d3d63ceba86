"""`from narrative_pipeline.us_gaap_store import UsGaapStore`: the design document's module name.

The facade and its parts live in the `narrative_pipeline/us_gaap/` package; this re-exports them.
"""

from narrative_pipeline.us_gaap import *  # noqa: F403
from narrative_pipeline.us_gaap import __all__  # noqa: F401
