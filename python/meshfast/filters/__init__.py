"""Python HTTP filters: subclass :class:`HttpFilter`, attach it with an ``HttpFilter`` resource.

.. code-block:: yaml

    apiVersion: meshfast.io/v1alpha1
    kind: HttpFilter
    metadata: {name: add-header}
    spec:
      python: add_header:AddHeader   # module:Class, from PYTHONPATH or this file's folder
      config: {name: x-hello, value: world}
      hosts: [reviews]               # optional; none or "*": every host
      route: reviews-v2              # optional: only the route of this name
      failureStatus: 500             # answered when the filter raises

See :mod:`meshfast.filters.api` for the phases and :mod:`meshfast.filters.dispatch` for how
the core calls them.
"""

from meshfast.filters.api import Headers, HttpFilter, LogInfo, Request, Response

__all__ = ["Headers", "HttpFilter", "LogInfo", "Request", "Response"]
