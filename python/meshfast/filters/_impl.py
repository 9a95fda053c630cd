"""Which implementations the package uses: the compiled ones, or their pure-Python twins.

The compiled modules (cython/*.pyx, built into ``meshfast._core``) are the default: the
header view ``Headers`` (cython/headers.pyx) and the per-request dispatch ``steps``
(cython/steps.pyx).  ``MESHFAST_PURE_PYTHON=1`` in the environment, when the package is
imported, selects the twins ``meshfast.filters.headers.Headers`` and
``meshfast.filters.steps``: same behaviour (tests/cython hold them to it), slower.  Type
checkers see the twins: the compiled modules have the same interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["PURE_PYTHON", "Headers", "steps"]

from meshfast._compiled import PURE_PYTHON

if TYPE_CHECKING or PURE_PYTHON:
    from meshfast.filters import steps
    from meshfast.filters.headers import Headers
else:
    import meshfast._steps as steps
    from meshfast._headers import Headers

# steps compares types with the Headers class in use (it imports nothing of the package:
# the compiled one is initialised with the core, before the package).
steps.use_headers(Headers)
