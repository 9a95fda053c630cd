"""The intermediate representation the core is told: a mirror of ``rust/ir/src/lib.rs``.

Field names and enum strings must stay identical to the Rust side; the two are
checked against each other by ``tests/test_ir.py`` (encode here, decode and
re-encode in Rust, compare).
"""

from __future__ import annotations

from typing import Literal

import msgspec

MatchKind = Literal["exact", "prefix", "regex"]
# PEAK_EWMA: a meshfast extension (annotation ``meshfast.io/load-balancer``).
LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PEAK_EWMA"]
UpstreamProtocol = Literal["http1", "http2", "tcp"]
ListenerProtocol = Literal["http", "tcp", "tls"]  # tls: SNI-routed passthrough
# Istio's meshConfig pathNormalization: how request paths are normalized before routing.
PathNormalization = Literal["none", "base", "merge_slashes", "decode_and_merge_slashes"]


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


class HeaderValue(msgspec.Struct, frozen=True):
    name: str
    value: str


class HeaderOps(msgspec.Struct, frozen=True):
    """Istio ``headers.{request,response}``: applied as remove, then set, then add."""

    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()


class WeightedCluster(msgspec.Struct, frozen=True):
    cluster: str
    weight: int
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


class Redirect(msgspec.Struct, frozen=True):
    scheme: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    path: str | None = None  # replaces the whole path
    prefix_rewrite: str | None = None  # replaces the matched prefix
    code: int = 301


class DirectResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes | None = None


class RegexRewrite(msgspec.Struct, frozen=True):
    pattern: str
    substitution: str


class Rewrite(msgspec.Struct, frozen=True):
    """``uri`` replaces the matched prefix (Envoy ``prefix_rewrite``: the whole path for an
    exact match, the leading ``/`` for a route without a path match)."""

    uri: str | None = None
    authority: str | None = None
    regex: RegexRewrite | None = None


class RetryPolicy(msgspec.Struct, frozen=True):
    attempts: int  # retries after the first try
    per_try_timeout_ms: int = 0
    retry_on: tuple[str, ...] = ()
    retriable_status_codes: tuple[int, ...] = ()
    backoff_base_ms: int = 25
    previous_hosts: bool = True
    remote_localities: bool = False  # retry into the next locality priority


class Fault(msgspec.Struct, frozen=True):
    """Percentages in millionths (Istio's 1e-4 % precision)."""

    delay_ms: int = 0
    delay_millionths: int = 0
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_millionths: int = 0


class Mirror(msgspec.Struct, frozen=True):
    cluster: str
    millionths: int = 1_000_000


class Cors(msgspec.Struct, frozen=True):
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: int | None = None
    allow_credentials: bool | None = None
    forward_unmatched_preflights: bool = True


class FilterRef(msgspec.Struct, frozen=True):
    """A Python ``HttpFilter`` attached to a route; the core calls the dispatcher with ``id``."""

    id: int
    name: str
    failure_status: int = 500
    timeout_ms: int = 1000  # the filter's time budget per phase
    request_body_limit: int = 0  # bytes of request body buffered for it (0: none; more: 413)
    response_body_limit: int = 0  # bytes of response body buffered for it (0: none; more: 500)


class RouteAction(msgspec.Struct, frozen=True):
    clusters: tuple[WeightedCluster, ...] = ()
    timeout_ms: int = 0
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    retry: RetryPolicy | None = None
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    cors: Cors | None = None
    filters: tuple[FilterRef, ...] = ()


class Route(msgspec.Struct, frozen=True, rename={"match_": "match"}):
    name: str
    match_: RouteMatch
    action: RouteAction
    stat_prefix: str | None = None  # Istio statPrefix: the name of this route's counters


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


class TlsServer(msgspec.Struct, frozen=True):
    """TLS termination (Gateway ``tls.mode`` SIMPLE / MUTUAL) from PEM file paths."""

    cert_chain: str
    private_key: str
    client_ca: str | None = None  # set: client certificates required (MUTUAL)
    min_version: Literal["TLSV1_2", "TLSV1_3"] | None = None
    permissive: bool = False  # plaintext served too (Istio's PERMISSIVE mesh inbound)
    forward_client_cert: bool = False  # x-forwarded-client-cert: the client's SPIFFE ID


class SniRoute(msgspec.Struct, frozen=True):
    """First match wins; ``sni_hosts`` are exact names, ``*.suffix`` or ``*``."""

    name: str
    sni_hosts: tuple[str, ...]
    clusters: tuple[WeightedCluster, ...]


class Listener(msgspec.Struct, frozen=True):
    name: str
    address: str
    protocol: ListenerProtocol = "http"
    route_table: str | None = None
    tcp_routes: tuple[TcpRoute, ...] = ()
    tls: TlsServer | None = None  # http only: terminate TLS first
    sni_routes: tuple[SniRoute, ...] = ()  # tls (passthrough) only
    authz: bool = False  # the workload's AuthorizationPolicies apply (inbound listeners)


class Endpoint(msgspec.Struct, frozen=True):
    address: str
    weight: int = 1
    labels: dict[str, str] = {}
    locality: str = ""  # region/zone/subzone
    priority: int = 0  # locality failover order: lowest priority with a healthy endpoint wins


class HashPolicy(msgspec.Struct, frozen=True):
    """Istio ``consistentHash``; replaces the cluster's ``lb`` when set."""

    source: Literal["header", "cookie", "source_ip", "query"]
    name: str = ""  # header, cookie or query parameter name
    cookie_ttl_ms: int | None = None  # set: generate the cookie when absent (0: session cookie)
    cookie_path: str | None = None
    algorithm: Literal["ring", "maglev"] = "ring"
    table_size: int = 1024  # ring: minimum ring size; maglev: table size (prime)


class OutlierDetection(msgspec.Struct, frozen=True):
    """Istio ``outlierDetection`` with Istio's defaults applied."""

    consecutive_5xx: int = 5  # 0: off
    consecutive_gateway: int = 0  # 0: off
    interval_ms: int = 10_000
    base_ejection_ms: int = 30_000  # x times ejected, capped at 300 s
    max_ejection_percent: int = 10  # at least one endpoint may always be ejected
    min_health_percent: int = 0  # panic threshold; 0: never panic


class Warmup(msgspec.Struct, frozen=True):
    """Slow start: a new endpoint's share grows from ``min_percent`` to full over
    ``duration_ms``, shaped by ``aggression`` (Envoy's slow_start_config)."""

    duration_ms: int
    min_percent: float = 10.0
    aggression: float = 1.0


class UpstreamTls(msgspec.Struct, frozen=True):
    """TLS origination (DestinationRule ``tls`` SIMPLE / MUTUAL) from PEM file paths.
    Without ``ca_certs`` the system roots are trusted; without ``sni`` the request's host
    is sent (Envoy's auto SNI)."""

    ca_certs: str | None = None
    client_cert: str | None = None  # MUTUAL
    private_key: str | None = None  # MUTUAL
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()  # DNS names (SPIFFE URIs when istio_mutual)
    insecure_skip_verify: bool = False
    # ISTIO_MUTUAL: the mesh identity's files above; the server must present one of
    # subject_alt_names, else any SPIFFE identity of trust_domain.
    istio_mutual: bool = False
    trust_domain: str | None = None


UNLIMITED = 2**32 - 1  # Istio's default for every connectionPool limit: none


class ConnectionLimits(msgspec.Struct, frozen=True):
    """DestinationRule ``connectionPool`` limits (Envoy's cluster circuit breakers), per
    cluster per sidecar, shared by all workers; ``UNLIMITED`` is no limit."""

    max_connections: int = UNLIMITED  # tcp.maxConnections: connections open at once
    max_pending_requests: int = UNLIMITED  # http.http1MaxPendingRequests: waiting for one
    max_requests: int = UNLIMITED  # http.http2MaxRequests: requests in flight
    max_retries: int = UNLIMITED  # http.maxRetries: retries in flight


class FailureRateBreaker(msgspec.Struct, frozen=True):
    """meshfast's failure-rate breaker per endpoint (annotation
    ``meshfast.io/failure-rate-breaker``): open when the exponentially weighted failure rate
    (time constant ``tau_ms``) exceeds ``threshold`` with at least ``min_requests`` in the
    window; cool-down doubling per opening up to ``max_cool_down_ms``; ``probes`` half-open."""

    threshold: float = 0.2
    tau_ms: int = 10_000
    min_requests: int = 20
    cool_down_ms: int = 5_000
    max_cool_down_ms: int = 300_000
    probes: int = 3


class Cluster(msgspec.Struct, frozen=True):
    name: str
    lb: LbPolicy = "LEAST_REQUEST"
    protocol: UpstreamProtocol = "http1"
    connect_timeout_ms: int = 10_000
    endpoints: tuple[Endpoint, ...] = ()
    hash: HashPolicy | None = None
    outlier: OutlierDetection | None = None
    warmup: Warmup | None = None
    # Each request goes to its original destination (resolution NONE, PASSTHROUGH):
    # the iptables-redirected address, or the x-envoy-original-dst-host header.
    original_dst: bool = False
    tls: UpstreamTls | None = None
    limits: ConnectionLimits | None = None  # connectionPool; None: no limits
    failure_rate: FailureRateBreaker | None = None  # meshfast extension; None: off


class Downstream(msgspec.Struct, frozen=True):
    """Limits on client connections; 0 stands for each one's default."""

    request_headers_timeout_ms: int = 0  # first request head, from accept (30 s)
    idle_timeout_ms: int = 0  # no request in flight for this long: closed (1 h)
    stream_idle_timeout_ms: int = 0  # a request body silent this long: 408 SI (5 min)
    max_connections: int = 0  # open at once, all listeners and workers (65,536)


AuthzAction = Literal["ALLOW", "DENY", "AUDIT"]
AuthzAttribute = Literal[
    "source_principal",  # the peer's SPIFFE ID, spiffe:// included
    "source_ip",
    "remote_ip",  # the peer's IP: no proxy in front is trusted
    "destination_ip",
    "destination_port",
    "sni",
    "host",  # :authority, case-insensitive
    "method",
    "path",  # normalized, without the query
    "header",  # the header named by ``key``
    "request_auth",  # JWT-derived: absent until RequestAuthentication is served
    "metadata",  # Envoy dynamic metadata (experimental.*): always absent
]
# present: exists (non-empty but for headers); regex: anchored; cidr: addr[/len]; port: number;
# template: Istio's {*} / {**} path template.
AuthzMatch = Literal["exact", "prefix", "suffix", "present", "regex", "cidr", "port", "template"]


class AuthzValue(msgspec.Struct, frozen=True):
    kind: AuthzMatch
    value: str = ""


class AuthzCondition(msgspec.Struct, frozen=True):
    """Holds when the attribute matches one of ``values`` (or there are none) and none of
    ``not_values``; an absent attribute matches no value."""

    attribute: AuthzAttribute
    key: str = ""  # the header name of a "header" condition
    values: tuple[AuthzValue, ...] = ()
    not_values: tuple[AuthzValue, ...] = ()


class AuthzRule(msgspec.Struct, frozen=True):
    """Matches when one ``from`` entry (all its conditions), one ``to`` entry and every
    ``when`` condition match; an empty list matches anything."""

    from_: tuple[tuple[AuthzCondition, ...], ...] = msgspec.field(default=(), name="from")
    to: tuple[tuple[AuthzCondition, ...], ...] = ()
    when: tuple[AuthzCondition, ...] = ()


class AuthzPolicy(msgspec.Struct, frozen=True):
    """An AuthorizationPolicy of this workload; matches when any rule does (none: never)."""

    name: str  # namespace/name: its counters' name
    action: AuthzAction = "ALLOW"
    dry_run: bool = False  # istio.io/dry-run: counted, never enforced
    rules: tuple[AuthzRule, ...] = ()


class Snapshot(msgspec.Struct, frozen=True):
    version: int = 0
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    path_normalization: PathNormalization = "base"
    # x-envoy-original-dst-host may steer original-destination clusters (Envoy's
    # use_http_header; off: any client could pick any address).
    original_dst_header: bool = False
    downstream: Downstream = Downstream()
    # The workload's AuthorizationPolicies for listeners with ``authz``: as written (HTTP), and
    # in Istio's TCP form (HTTP-only conditions dropped from DENY/AUDIT rules, ALLOW rules
    # with one dropped whole).
    authz: tuple[AuthzPolicy, ...] = ()
    authz_tcp: tuple[AuthzPolicy, ...] = ()


def encode(snapshot: Snapshot) -> bytes:
    """The bytes ``Core.apply_snapshot`` takes."""
    return msgspec.msgpack.encode(snapshot)


def decode(data: bytes) -> Snapshot:
    """The snapshot :func:`encode` wrote (``msgspec.ValidationError``/``DecodeError`` if not)."""
    return msgspec.msgpack.decode(data, type=Snapshot)


def to_builtins(snapshot: Snapshot) -> object:
    """A JSON-ready view, used by ``/config_dump`` and ``explain``."""
    return msgspec.to_builtins(snapshot)
