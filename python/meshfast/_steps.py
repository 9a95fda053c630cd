"""Stand-in for the compiled ``meshfast._steps`` (cython/steps.pyx): see
:mod:`meshfast._compiled`."""

from meshfast._compiled import stand_in

stand_in(__name__, "request_from")
