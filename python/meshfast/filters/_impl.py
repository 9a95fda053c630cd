"""Which :class:`Headers` the package uses: the compiled one, or the pure-Python twin.

The compiled class (cython/headers.pyx, built into ``meshfast._core``) is the default.
``MESHFAST_PURE_PYTHON=1`` in the environment, when the package is imported, selects the
twin ``meshfast.filters.headers.Headers``: same behaviour (tests/cython hold them to it),
slower.  Type checkers see the twin: the compiled class has the same interface.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["PURE_PYTHON", "Headers"]

PURE_PYTHON = os.environ.get("MESHFAST_PURE_PYTHON") == "1"

if TYPE_CHECKING or PURE_PYTHON:
    from meshfast.filters.headers import Headers
else:
    from meshfast._headers import Headers
