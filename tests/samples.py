"""Where the shared conformance corpus lives: ../shared beside the repository
(as CI lays it out), or MESHFAST_SHARED."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    candidates = [
        Path(os.environ["MESHFAST_SHARED"]) if "MESHFAST_SHARED" in os.environ else None,
        REPO.parent / "shared",
        Path("/work/shared"),
    ]
    for c in candidates:
        if c is not None and (c / "istio-samples").is_dir():
            return c
    raise FileNotFoundError("the shared corpus (../shared/istio-samples) is missing")


SAMPLES = shared_dir() / "istio-samples"
BOOKINFO_NETWORKING = SAMPLES / "samples" / "bookinfo" / "networking"


# A VirtualService with one bad field (line 11: `weight: lots`), for config-error tests.
# The Content-Type of a POST /config body: the admin API refuses a body without one.
YAML_TYPE = {"content-type": "application/yaml"}

BAD_WEIGHT_YAML = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
      weight: lots
"""
