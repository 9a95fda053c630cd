"""The intermediate representation the core is told: a mirror of ``rust/ir/src/lib.rs``.

Field names and enum strings must stay identical to the Rust side; the two are
checked against each other by ``tests/test_ir.py`` (encode here, decode and
re-encode in Rust, compare).
"""

from __future__ import annotations

from typing import Literal

import msgspec

MatchKind = Literal["exact", "prefix", "regex"]
LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]
UpstreamProtocol = Literal["http1", "http2", "tcp"]
ListenerProtocol = Literal["http", "tcp"]


class StringMatch(msgspec.Struct, frozen=True):
    kind: MatchKind
    value: str
    ignore_case: bool = False


class HeaderMatch(msgspec.Struct, frozen=True):
    name: str
    value: StringMatch | None = None  # None: the header must be present
    invert: bool = False


class QueryMatch(msgspec.Struct, frozen=True):
    name: str
    value: StringMatch | None = None


class RouteMatch(msgspec.Struct, frozen=True):
    path: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    scheme: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryMatch, ...] = ()


class WeightedCluster(msgspec.Struct, frozen=True):
    cluster: str
    weight: int


class RouteAction(msgspec.Struct, frozen=True):
    clusters: tuple[WeightedCluster, ...] = ()
    timeout_ms: int = 0


class Route(msgspec.Struct, frozen=True, rename={"match_": "match"}):
    name: str
    match_: RouteMatch
    action: RouteAction


class VirtualHost(msgspec.Struct, frozen=True):
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


class RouteTable(msgspec.Struct, frozen=True):
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


class TcpRoute(msgspec.Struct, frozen=True):
    name: str
    clusters: tuple[WeightedCluster, ...]


class Listener(msgspec.Struct, frozen=True):
    name: str
    address: str
    protocol: ListenerProtocol = "http"
    route_table: str | None = None
    tcp_routes: tuple[TcpRoute, ...] = ()


class Endpoint(msgspec.Struct, frozen=True):
    address: str
    weight: int = 1
    labels: dict[str, str] = {}


class Cluster(msgspec.Struct, frozen=True):
    name: str
    lb: LbPolicy = "LEAST_REQUEST"
    protocol: UpstreamProtocol = "http1"
    connect_timeout_ms: int = 10_000
    endpoints: tuple[Endpoint, ...] = ()


class Snapshot(msgspec.Struct, frozen=True):
    version: int = 0
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    clusters: tuple[Cluster, ...] = ()


def encode(snapshot: Snapshot) -> bytes:
    """The bytes ``Core.apply_snapshot`` takes."""
    return msgspec.msgpack.encode(snapshot)


def to_builtins(snapshot: Snapshot) -> object:
    """A JSON-ready view, used by ``/config_dump`` and ``explain``."""
    return msgspec.to_builtins(snapshot)
