"""Session-wide test settings."""

from __future__ import annotations

import os
import tempfile

# Sidecars started by the tests keep their snapshot cache in a folder of this test run,
# never in the user's ~/.cache (and never reuse one from an earlier run).
os.environ["MESHFAST_CACHE_DIR"] = tempfile.mkdtemp(prefix="meshfast-test-cache-")
