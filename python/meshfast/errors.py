"""The exceptions a meshfast user can meet, in one place.

``ConfigError``/``Problem`` come from the config loader; ``SnapshotError``/``CoreError``
come from the Rust core. All four are resolved lazily, so importing this module costs
nothing and does not load the core (which may not be built yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshfast._core import CoreError as CoreError
    from meshfast._core import SnapshotError as SnapshotError
    from meshfast.config import ConfigError as ConfigError
    from meshfast.config import Problem as Problem

__all__ = ["ConfigError", "CoreError", "Problem", "SnapshotError", "core_errors"]


def core_errors() -> tuple[type[Exception], ...]:
    """The exceptions ``Core.apply_snapshot`` raises for a rejected snapshot.

    Empty when the core is not built, so ``except core_errors():`` then catches nothing.
    """
    try:
        from meshfast import _core
    except ImportError:
        return ()
    return (_core.SnapshotError, _core.CoreError)


def __getattr__(name: str) -> object:
    if name in ("ConfigError", "Problem"):
        from meshfast import config

        return getattr(config, name)
    if name in ("CoreError", "SnapshotError"):
        from meshfast import _core

        return getattr(_core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
