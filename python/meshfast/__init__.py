"""meshfast: a service-mesh sidecar proxy with a Rust data plane and a Python control layer.

Importing this package is cheap on purpose: it imports neither Trio nor the Rust core
(``meshfast._core``). Every command imports what it needs when it runs.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
