"""The named scenarios: which config every proxy serves, what load, and where things run.

Every scenario's config is Istio YAML, compiled by meshfast and exported to Envoy (and, where
it can be said, to HAProxy) from the same IR. The upstream service is ``upstream.local:80``
(a ServiceEntry with one static endpoint: the echo server or nginx); every request carries
``Host: upstream.local``.

- ``h1-keepalive``: wrk, 50 keep-alive connections, small body: the HTTP/1.1 steady state.
- ``h2-multiplexed``: h2load, 10 connections x 10 streams, h2c downstream, HTTP/1.1 upstream.
- ``connection-churn``: wrk, 10 connections, ``Connection: close``: accept, set-up and close
  on every request.
- ``large-body``: wrk, 10 connections, 1 MiB responses: streaming bodies through the proxy.
- ``route-table-1000``: wrk, 50 connections; one VirtualService with 1,000 ordered prefix
  routes and requests spread evenly over them (first match wins, so a request passes 500
  routes on average).
- ``same-core-latency``: wrk, 1 connection, back to back, with proxy, upstream and load
  generator all on ONE core: the added p50/p99 over direct is the proxy's own cost, without
  cross-core wake-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "HOST",
    "LARGE_BODY_BYTES",
    "ROUTE_COUNT",
    "SCENARIOS",
    "Scenario",
    "config_yaml",
    "route_paths",
]

HOST = "upstream.local"
PORT = 80
LARGE_BODY_BYTES = 1 << 20
ROUTE_COUNT = 1000


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    tool: Literal["wrk", "h2load"]
    connections: int
    streams: int = 1  # h2load: concurrent streams per connection
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    routes: int = 0  # > 0: a VirtualService with this many prefix routes, requests spread
    same_core: bool = False  # proxy, upstream and load generator all on the proxy's core

    @property
    def request_headers(self) -> dict[str, str]:
        return {"Host": HOST, **self.headers}

    @property
    def probe_path(self) -> str:
        """A path every proxy routes in this scenario (readiness is a proxied 200 on it)."""
        return route_paths(1)[0] if self.routes else self.path


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "h1-keepalive",
            "HTTP/1.1 keep-alive, 50 connections, small body",
            tool="wrk",
            connections=50,
        ),
        Scenario(
            "h2-multiplexed",
            "h2c, 10 connections x 10 streams (HTTP/1.1 upstream)",
            tool="h2load",
            connections=10,
            streams=10,
        ),
        Scenario(
            "connection-churn",
            "a new connection per request (Connection: close), 10 at a time",
            tool="wrk",
            connections=10,
            headers={"Connection": "close"},
        ),
        Scenario(
            "large-body",
            "1 MiB responses over 10 keep-alive connections",
            tool="wrk",
            connections=10,
            path="/large",
            headers={"x-echo-body-bytes": str(LARGE_BODY_BYTES)},
        ),
        Scenario(
            "route-table-1000",
            "1,000 VirtualService routes (ordered prefixes), requests spread over all",
            tool="wrk",
            connections=50,
            routes=ROUTE_COUNT,
        ),
        Scenario(
            "same-core-latency",
            "1 connection back to back, everything on one core: added latency over direct",
            tool="wrk",
            connections=1,
            same_core=True,
        ),
    )
}


def route_paths(count: int) -> list[str]:
    """The request paths of a route-table scenario: one per route, in route order."""
    return [f"/r/{i}/item" for i in range(count)]


def config_yaml(scenario: Scenario, upstream: str) -> str:
    """The Istio YAML every proxy serves in ``scenario``, with ``upstream`` as the endpoint."""
    ip, _, port = upstream.rpartition(":")
    docs = [
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: upstream}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]
  endpoints:
  - address: {ip.strip("[]")}
    ports: {{http: {port}}}
"""
    ]
    if scenario.routes:
        lines = [
            "apiVersion: networking.istio.io/v1",
            "kind: VirtualService",
            "metadata: {name: routes}",
            "spec:",
            f"  hosts: [{HOST}]",
            "  http:",
        ]
        for i in range(scenario.routes):
            lines += [
                f"  - name: r{i}",
                f"    match: [{{uri: {{prefix: /r/{i}/}}}}]",
                f"    route: [{{destination: {{host: {HOST}}}}}]",
            ]
        docs.append("\n".join(lines) + "\n")
    return "---\n".join(docs)
