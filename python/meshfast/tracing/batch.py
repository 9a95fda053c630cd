"""The span-batch decoder the exporter uses: compiled (cython/spanbatch.pyx), or the
pure-Python twin :func:`meshfast.tracing.spans.decode` with ``MESHFAST_PURE_PYTHON=1``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshfast._compiled import PURE_PYTHON

__all__ = ["decode"]

if TYPE_CHECKING or PURE_PYTHON:
    from meshfast.tracing.spans import decode
else:
    from meshfast._spanbatch import decode
