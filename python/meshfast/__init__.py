"""meshfast: a service-mesh sidecar proxy with a Rust data plane and a Python control layer.

Importing this package is cheap on purpose: it imports neither Trio nor the Rust core
(``meshfast._core``). Every command imports what it needs when it runs, and
``meshfast.Sidecar`` (:mod:`meshfast.embed`: a sidecar served inside your Trio program) is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshfast.embed import Sidecar as Sidecar

__all__ = ["Sidecar", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "Sidecar":
        from meshfast.embed import Sidecar

        return Sidecar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
