"""The VirtualService ``tls[]`` types: SNI-routed, non-terminated TLS.

Split out of :mod:`meshfast.config.resources`, which re-exports every name here.  The route
destinations are the same ``RouteDestination`` as ``tcp[]`` (weighted, per connection); it is
declared here so :mod:`meshfast.config.resources` can import it without a cycle.
"""

from __future__ import annotations

from meshfast.config.http_route import Destination
from meshfast.config.structs import IstioStruct, Port, Weight


class RouteDestination(IstioStruct, frozen=True):
    destination: Destination
    weight: Weight | None = None


class TLSMatchAttributes(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"destinationSubnets"})

    sni_hosts: tuple[str, ...]
    port: Port | None = None
    gateways: tuple[str, ...] = ()  # set: replaces the VirtualService's gateways for this match
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None


class TLSRoute(IstioStruct, frozen=True):
    match: tuple[TLSMatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()
