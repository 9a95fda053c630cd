"""Stand-in for the compiled ``meshfast._spanbatch`` (cython/spanbatch.pyx): see
:mod:`meshfast._compiled`."""

from meshfast._compiled import stand_in

stand_in(__name__, "decode")
