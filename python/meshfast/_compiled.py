"""Stand-ins for the compiled modules of cython/ (``meshfast._headers``, ``meshfast._steps``).

The compiled modules live inside ``meshfast._core``, whose init registers each in
``sys.modules`` under its name (rust/py/src/speedups.rs).  A stand-in file of that name only
makes ``import meshfast._NAME`` work before ``meshfast._core`` is loaded (unpickling in a
fresh process, say): it imports the core, and the import system then hands out the
registered module instead of the stand-in.
"""

import os
import sys

# ``MESHFAST_PURE_PYTHON=1`` when the package is imported: the pure-Python twins are used
# instead of the compiled modules (meshfast.filters._impl, meshfast.tracing.batch).
PURE_PYTHON = os.environ.get("MESHFAST_PURE_PYTHON") == "1"


def stand_in(name: str, attribute: str) -> None:
    """Loads the core; raises ImportError if it did not register ``name`` (with
    ``attribute``), i.e. it was built without its Cython modules."""
    import meshfast._core  # noqa: F401  (its init registers the compiled modules)

    if not hasattr(sys.modules.get(name), attribute):
        raise ImportError(
            "meshfast._core was built without its Cython modules (cargo feature `cython`): "
            "reinstall it with `pip install .`, or set MESHFAST_PURE_PYTHON=1"
        )
