"""The sidecar's log levels, as Envoy's ``/logging`` admin path changes them.

meshfast's Python loggers (``meshfast.admin``, ``meshfast.filters``, …) write to stderr
through one handler on ``meshfast``, at WARNING unless told otherwise.  The lifecycle lines
(ready, reloads, refused configs) are printed whatever the level: they are the sidecar's
answers, not its chatter.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LEVELS", "ROOT", "levels", "set_level", "setup"]

ROOT = "meshfast"
LEVELS = ("critical", "error", "warning", "info", "debug")
# Loggers that exist before any of their modules is imported, so /logging lists them all.
KNOWN = ("meshfast.admin", "meshfast.filters", "meshfast.tracing")


def setup(level: str = "warning") -> None:
    """One stderr handler on the ``meshfast`` logger (idempotent)."""
    root = logging.getLogger(ROOT)
    if not any(getattr(h, "_meshfast", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("meshfast: %(levelname)s %(name)s: %(message)s"))
        handler._meshfast = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level.upper())
    for name in KNOWN:
        logging.getLogger(name)


def levels() -> dict[str, str]:
    """Every meshfast logger and its effective level, lower case."""
    names = [ROOT, *sorted(n for n in logging.root.manager.loggerDict if n.startswith(ROOT + "."))]
    return {
        n: logging.getLevelName(logging.getLogger(n).getEffectiveLevel()).lower() for n in names
    }


def set_level(name: str, level: str) -> None:
    """``name`` (``level`` for all: the ``meshfast`` logger, the others reset to follow it)
    at ``level``; ValueError naming what is not known."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")
    if name == "level":
        logging.getLogger(ROOT).setLevel(level.upper())
        for other in levels():
            if other != ROOT:
                logging.getLogger(other).setLevel(logging.NOTSET)
        return
    if name not in levels():
        raise ValueError(f"unknown logger {name!r} (GET /logging lists them)")
    logging.getLogger(name).setLevel(level.upper())
