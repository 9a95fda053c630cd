"""Stand-in for the compiled ``meshfast._headers`` (cython/headers.pyx).

The compiled module lives inside ``meshfast._core``, whose init registers it in
``sys.modules`` under this name (rust/py/src/speedups.rs).  This file only makes
``import meshfast._headers`` work before ``meshfast._core`` is loaded (unpickling in a
fresh process, say): it imports the core, and the import system then hands out the
registered module instead of this one.
"""

import sys

import meshfast._core  # noqa: F401  (its init registers the compiled module)

if not hasattr(sys.modules.get(__name__), "Headers"):
    raise ImportError(
        "meshfast._core was built without its Cython modules (cargo feature `cython`): "
        "reinstall it with `pip install .`, or set MESHFAST_PURE_PYTHON=1"
    )
