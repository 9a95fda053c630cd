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
- ``breaker``: the ``h1-keepalive`` load on a service with two endpoints, one of which answers
  every request 503: a DestinationRule sets connectionPool limits (high enough not to trip)
  and outlierDetection (3 consecutive 5xx eject for 30 s), so the proxy must find and eject
  the failing endpoint; the errors before it does are counted. (``direct`` reaches the
  healthy endpoint only: the floor.)
- ``python-filter``: the ``h1-keepalive`` load through meshfast four ways, without a filter,
  with a no-op Python ``HttpFilter``, with one setting a request and a response header, and
  with an ``async def`` no-op (:data:`FILTER_MODULE`, written next to the config): the cost of
  calling into Python, and of the hand-off to the Trio loop.
  Envoy and HAProxy are skipped (they cannot run meshfast's Python filters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FILTER_MODULE",
    "FILTER_MODULE_NAME",
    "HOST",
    "LARGE_BODY_BYTES",
    "ROUTE_COUNT",
    "SCENARIOS",
    "MeshfastVariant",
    "Scenario",
    "config_yaml",
    "route_paths",
]

HOST = "upstream.local"
PORT = 80
LARGE_BODY_BYTES = 1 << 20
ROUTE_COUNT = 1000

FILTER_MODULE_NAME = "benchfilters"
FILTER_MODULE = '''"""Written by meshfast bench (python-filter) beside the config naming it."""

from meshfast.filters import HttpFilter, Request, Response


class Noop(HttpFilter):
    """Synchronous on_request only, returns None: the bare cost of a call into Python."""

    def on_request(self, request: Request) -> Response | None:
        return None


class AsyncNoop(HttpFilter):
    """An ``async def`` on_request that awaits nothing: the cost of the hand-off to the Trio
    loop and back (the worker serves other requests meanwhile)."""

    async def on_request(self, request: Request) -> Response | None:
        return None


class SetHeaders(HttpFilter):
    """Sets one request header and one response header."""

    def on_request(self, request: Request) -> Response | None:
        request.headers["x-bench-filter"] = "1"
        return None

    def on_response(self, request: Request, response: Response) -> None:
        response.headers["x-bench-filtered"] = "1"
'''
"""The filter module of ``python-filter`` (``FILTER_MODULE_NAME``.py beside the YAML)."""

PYTHON_ONLY = "cannot run meshfast's Python filters; the scenario compares meshfast with itself"


@dataclass(frozen=True)
class MeshfastVariant:
    """meshfast run under the record name ``name``, with ``filter`` (a class of
    :data:`FILTER_MODULE`) as an ``HttpFilter`` on every route, or no filter."""

    name: str
    filter: str | None = None


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
    # meshfast is measured once per variant (records named after them) instead of once
    variants: tuple[MeshfastVariant, ...] = ()
    skip: Mapping[str, str] = field(default_factory=dict)  # peer -> why it is not measured
    # A second endpoint that answers 503, with connectionPool and outlierDetection set.
    failing_endpoint: bool = False

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
        Scenario(
            "breaker",
            "h1-keepalive on two endpoints, one failing every request: connectionPool limits and"
            " outlier detection eject it",
            tool="wrk",
            connections=50,
            failing_endpoint=True,
        ),
        Scenario(
            "python-filter",
            "h1-keepalive load through meshfast without, with a no-op, a header-setting and an"
            " async no-op Python filter",
            tool="wrk",
            connections=50,
            variants=(
                MeshfastVariant("meshfast"),
                MeshfastVariant("meshfast+noop-filter", "Noop"),
                MeshfastVariant("meshfast+header-filter", "SetHeaders"),
                MeshfastVariant("meshfast+async-filter", "AsyncNoop"),
            ),
            skip={"envoy": PYTHON_ONLY, "haproxy": PYTHON_ONLY},
        ),
    )
}


# The breaker scenario's DestinationRule: limits that do not trip at 50 connections, and an
# outlier detection that ejects the failing endpoint after 3 consecutive 5xx.
BREAKER_RULE = f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: upstream}}
spec:
  host: {HOST}
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    connectionPool:
      tcp: {{maxConnections: 1000}}
      http: {{http1MaxPendingRequests: 1000, http2MaxRequests: 1000, maxRetries: 100}}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
"""


def route_paths(count: int) -> list[str]:
    """The request paths of a route-table scenario: one per route, in route order."""
    return [f"/r/{i}/item" for i in range(count)]


def config_yaml(
    scenario: Scenario,
    upstream: str,
    python_filter: str | None = None,
    failing: str | None = None,
) -> str:
    """The Istio YAML every proxy serves in ``scenario``, with ``upstream`` as the endpoint
    (and ``failing``, the endpoint that answers 503, in a ``failing_endpoint`` scenario);
    ``python_filter`` (a class of :data:`FILTER_MODULE`) adds an ``HttpFilter`` on every route
    (meshfast only; the module must be written beside the YAML)."""
    endpoints = ""
    for address in (upstream, failing) if failing else (upstream,):
        ip, _, port = address.rpartition(":")
        endpoints += f"""  - address: {ip.strip("[]")}
    ports: {{http: {port}}}
"""
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
{endpoints}"""
    ]
    if scenario.failing_endpoint:
        docs.append(BREAKER_RULE)
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
    if python_filter is not None:
        docs.append(
            f"""apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata: {{name: bench-filter}}
spec:
  python: "{FILTER_MODULE_NAME}:{python_filter}"
"""
        )
    return "---\n".join(docs)
