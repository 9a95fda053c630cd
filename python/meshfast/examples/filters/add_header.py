"""Header injection: sets request and response headers from its config.

.. code-block:: yaml

    apiVersion: meshfast.io/v1alpha1
    kind: HttpFilter
    metadata:
      name: add-header
    spec:
      python: add_header:AddHeader
      hosts: [reviews]
      config:
        request: {x-tenant: blue}
        response: {x-served-by: meshfast}
"""

from __future__ import annotations

import msgspec

from meshfast.filters import HttpFilter, Request, Response


class AddHeader(HttpFilter):
    class Config(msgspec.Struct, forbid_unknown_fields=True):
        request: dict[str, str] = {}
        response: dict[str, str] = {}

    config: Config

    def on_request(self, request: Request) -> Response | None:
        for name, value in self.config.request.items():
            request.headers[name] = value
        return None

    def on_response(self, request: Request, response: Response) -> None:
        for name, value in self.config.response.items():
            response.headers[name] = value
