"""Giving the C heap's freed pages back to the system after a start or a reload."""

from __future__ import annotations

__all__ = ["trim_heap"]


def trim_heap() -> bool:
    """Gives the C heap's free pages back (``_core.trim_memory``): a start or a config
    compile frees far more than it keeps, and glibc keeps freed pages mapped. False
    without the compiled core (tests of the control layer alone)."""
    try:
        from meshfast._core import trim_memory
    except ImportError:
        return False
    return trim_memory()
