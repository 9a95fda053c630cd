"""The resources meshfast reads, as msgspec Structs mirroring the Istio and Kubernetes APIs.

Each Istio Struct names, in ``NOT_IMPLEMENTED``, the camelCase fields Istio defines that meshfast
does not implement yet: the validator reports every one present as ``not implemented yet``
instead of ignoring it.  Implementing a field means moving it from that set into the Struct.

The ``http[]`` types of a VirtualService live in :mod:`meshfast.config.http_route`, its ``tls[]``
types in :mod:`meshfast.config.tls_route`, the Gateway spec in :mod:`meshfast.config.gateway`,
the base Structs in :mod:`meshfast.config.structs`.

Istio Structs forbid unknown fields (``unknown field "foo"``); Kubernetes Structs accept and
ignore fields they do not name (object dumps carry many fields a sidecar has no use for).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from meshfast.config.authorization_policy import AuthorizationPolicySpec
from meshfast.config.gateway import GatewaySpec
from meshfast.config.http_route import HTTPRoute
from meshfast.config.structs import (
    Int32,
    IstioStruct,
    K8sStruct,
    Percentage,
    Port,
    UInt32,
    UInt64,
)
from meshfast.config.tls_route import RouteDestination as RouteDestination
from meshfast.config.tls_route import TLSRoute

SimpleLb = Literal[
    "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
]
Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]
Location = Literal["MESH_EXTERNAL", "MESH_INTERNAL"]
CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]
OutboundMode = Literal["REGISTRY_ONLY", "ALLOW_ANY"]

NETWORKING_VERSIONS = frozenset(
    {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"}
)
MESHFAST_VERSIONS = frozenset({"meshfast.io/v1alpha1"})
SECURITY_VERSIONS = frozenset({"security.istio.io/v1", "security.istio.io/v1beta1"})


class ObjectMeta(K8sStruct, frozen=True):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


# --- VirtualService -----------------------------------------------------------------------


class L4MatchAttributes(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"destinationSubnets", "sourceSubnet"})

    port: Port | None = None
    gateways: tuple[str, ...] = ()  # set: replaces the VirtualService's gateways for this match
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None


class TCPRoute(IstioStruct, frozen=True):
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


class VirtualServiceSpec(IstioStruct, frozen=True):
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()


# --- DestinationRule ----------------------------------------------------------------------


class HTTPCookie(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"attributes"})

    name: str
    path: str | None = None
    ttl: str | None = None  # set: the proxy generates the cookie when absent ("0s": session)


class RingHash(IstioStruct, frozen=True):
    minimum_ring_size: UInt64 | None = None


class MagLev(IstioStruct, frozen=True):
    table_size: UInt64 | None = None


class ConsistentHashLB(IstioStruct, frozen=True):
    # hash_key oneof
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    # hash_algorithm oneof, and the deprecated ring size
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: UInt64 | None = None


class LocalityDistribute(IstioStruct, frozen=True):
    from_: str = msgspec.field(default="", name="from")
    to: dict[str, UInt32] = {}


class LocalityFailover(IstioStruct, frozen=True):
    from_: str = msgspec.field(default="", name="from")  # a region
    to: str = ""  # a region


class LocalityLbSetting(IstioStruct, frozen=True):
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()  # acts only with outlier detection
    failover_priority: tuple[str, ...] = ()  # labels, `key` or `key=value`; ditto
    enabled: bool | None = None


class WarmupConfiguration(IstioStruct, frozen=True):
    duration: str
    minimum_percent: Percentage | None = None  # unset: 10
    aggression: Annotated[float, msgspec.Meta(ge=0)] | None = None  # unset: 1.0


class LoadBalancerSettings(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"zoneAwareLbSetting"})

    simple: SimpleLb | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLbSetting | None = None
    warmup: WarmupConfiguration | None = None
    warmup_duration_secs: str | None = None  # deprecated: warmup.duration


class OutlierDetection(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset(
        {
            "splitExternalLocalOriginErrors",
            "consecutiveLocalOriginFailures",
            "outlierDetectionHttpErrorCodes",
        }
    )

    consecutive_5xx_errors: UInt32 | None = msgspec.field(
        default=None, name="consecutive5xxErrors"
    )  # unset: 5; 0: off
    consecutive_gateway_errors: UInt32 | None = None  # unset, 0: off
    consecutive_errors: Int32 | None = None  # deprecated: gateway errors, and 5xx off
    interval: str | None = None  # unset: 10s
    base_ejection_time: str | None = None  # unset: 30s
    max_ejection_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None  # unset, 0: 10
    min_health_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None  # unset: 0


class PortSelector(IstioStruct, frozen=True):
    number: Port


ClientTlsMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class ClientTLSSettings(IstioStruct, frozen=True):
    """DestinationRule ``tls``: how to originate TLS to the endpoints."""

    NOT_IMPLEMENTED = frozenset({"credentialName", "caCrl"})

    mode: ClientTlsMode = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    sni: str | None = None
    insecure_skip_verify: bool | None = None


class TCPSettings(IstioStruct, frozen=True):
    """``connectionPool.tcp``; 0 (or unset) limits nothing, as in istiod."""

    NOT_IMPLEMENTED = frozenset({"tcpKeepalive", "maxConnectionDuration", "idleTimeout"})

    max_connections: Int32 | None = None  # Envoy max_connections; unset, 0: 2^32-1
    connect_timeout: str | None = None  # unset: the mesh default, 10s


class HTTPSettings(IstioStruct, frozen=True):
    """``connectionPool.http``; 0 (or unset) limits nothing, as in istiod."""

    NOT_IMPLEMENTED = frozenset(
        {
            "maxRequestsPerConnection",
            "idleTimeout",
            "h2UpgradePolicy",
            "useClientProtocol",
            "maxConcurrentStreams",
            "http2KeepAlive",
        }
    )

    http1_max_pending_requests: Int32 | None = None  # Envoy max_pending_requests
    http2_max_requests: Int32 | None = None  # Envoy max_requests (HTTP/1.1 and HTTP/2)
    max_retries: Int32 | None = None  # Envoy max_retries


class ConnectionPoolSettings(IstioStruct, frozen=True):
    """``connectionPool``: the cluster's circuit-breaking limits (per sidecar)."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class PortTrafficPolicy(IstioStruct, frozen=True):
    port: PortSelector
    connection_pool: ConnectionPoolSettings | None = None
    load_balancer: LoadBalancerSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset(
        {
            "tunnel",
            "proxyProtocol",
            "retryBudget",
        }
    )

    connection_pool: ConnectionPoolSettings | None = None
    load_balancer: LoadBalancerSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()


class Subset(IstioStruct, frozen=True):
    name: str
    labels: dict[str, str] = {}
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"workloadSelector"})

    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] = ()


# --- ServiceEntry / WorkloadEntry ---------------------------------------------------------


class ServicePort(IstioStruct, frozen=True):
    number: Port
    protocol: str | None = None
    name: str | None = None
    target_port: Port | None = None


class WorkloadEntrySpec(IstioStruct, frozen=True):
    address: str = ""
    ports: dict[str, Port] = {}
    labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: UInt32 | None = None
    service_account: str | None = None


class WorkloadSelector(IstioStruct, frozen=True):
    labels: dict[str, str] = {}


class ServiceEntrySpec(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"subjectAltNames"})

    hosts: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    location: Location | None = None
    resolution: Resolution | None = None
    endpoints: tuple[WorkloadEntrySpec, ...] = ()
    workload_selector: WorkloadSelector | None = None
    export_to: tuple[str, ...] = ()


# --- Sidecar ------------------------------------------------------------------------------


class SidecarPort(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"targetPort"})

    number: Port | None = None
    protocol: str | None = None
    name: str | None = None


class IstioIngressListener(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"tls", "connectionPool"})

    port: SidecarPort
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    default_endpoint: str | None = None


class IstioEgressListener(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"port", "bind", "captureMode"})

    hosts: tuple[str, ...]


class OutboundTrafficPolicy(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"egressProxy"})

    mode: OutboundMode = "REGISTRY_ONLY"


class SidecarSpec(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"inboundConnectionPool"})

    workload_selector: WorkloadSelector | None = None
    ingress: tuple[IstioIngressListener, ...] = ()
    egress: tuple[IstioEgressListener, ...] = ()
    outbound_traffic_policy: OutboundTrafficPolicy | None = None


# --- Istio top-level resources ------------------------------------------------------------


class VirtualService(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: VirtualServiceSpec
    status: Any = None


class DestinationRule(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: DestinationRuleSpec
    status: Any = None


class ServiceEntry(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: ServiceEntrySpec
    status: Any = None


class WorkloadEntry(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: WorkloadEntrySpec
    status: Any = None


class Sidecar(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: SidecarSpec
    status: Any = None


class Gateway(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: GatewaySpec
    status: Any = None


# --- meshfast's own resources ------------------------------------------------------------


class HttpFilterSpec(IstioStruct, frozen=True):
    """A Python ``HttpFilter`` (:mod:`meshfast.filters`) and the routes it runs on.

    ``python`` is ``module:Class`` (imported from PYTHONPATH or the folder of the config file
    that names it); ``config`` is given to the class (validated against its ``Config`` Struct
    when it has one).  ``hosts`` (expanded like VirtualService hosts; none or ``*``: every
    host) and ``route`` (a route name) limit where it runs.  ``failureStatus`` answers a request
    whose filter failed; ``timeout`` is its time budget per phase (default 1s).
    """

    python: str
    config: dict[str, Any] | None = None
    hosts: tuple[str, ...] = ()
    route: str | None = None
    failure_status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 500
    timeout: str | None = None


class HttpFilter(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: HttpFilterSpec
    status: Any = None


# --- Kubernetes ---------------------------------------------------------------------------


class ServicePortK8s(K8sStruct, frozen=True):
    port: Port
    name: str | None = None
    target_port: int | str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None


class ServiceSpecK8s(K8sStruct, frozen=True):
    ports: tuple[ServicePortK8s, ...] = ()
    selector: dict[str, str] = {}
    cluster_ip: str | None = msgspec.field(default=None, name="clusterIP")
    cluster_ips: tuple[str, ...] = msgspec.field(default=(), name="clusterIPs")


class Service(K8sStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: ServiceSpecK8s = ServiceSpecK8s()


class EndpointConditions(K8sStruct, frozen=True):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class SliceEndpoint(K8sStruct, frozen=True):
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    zone: str | None = None
    hostname: str | None = None


class SlicePort(K8sStruct, frozen=True):
    name: str | None = None
    port: Port | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None


class EndpointSlice(K8sStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    address_type: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()


# --- AuthorizationPolicy (its spec: meshfast.config.authorization_policy) ------------------


class AuthorizationPolicy(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: AuthorizationPolicySpec = AuthorizationPolicySpec()
    status: Any = None


Resource = (
    VirtualService
    | DestinationRule
    | ServiceEntry
    | WorkloadEntry
    | Sidecar
    | Gateway
    | HttpFilter
    | Service
    | EndpointSlice
    | AuthorizationPolicy
)

# kind -> (Struct, accepted apiVersions)
KINDS: dict[str, tuple[type[Any], frozenset[str]]] = {
    "VirtualService": (VirtualService, NETWORKING_VERSIONS),
    "DestinationRule": (DestinationRule, NETWORKING_VERSIONS),
    "ServiceEntry": (ServiceEntry, NETWORKING_VERSIONS),
    "WorkloadEntry": (WorkloadEntry, NETWORKING_VERSIONS),
    "Sidecar": (Sidecar, NETWORKING_VERSIONS),
    "Gateway": (Gateway, NETWORKING_VERSIONS),
    "HttpFilter": (HttpFilter, MESHFAST_VERSIONS),
    "Service": (Service, frozenset({"v1"})),
    "EndpointSlice": (EndpointSlice, frozenset({"discovery.k8s.io/v1"})),
    "AuthorizationPolicy": (AuthorizationPolicy, SECURITY_VERSIONS),
}

# Istio kinds meshfast knows of but does not implement yet.
ISTIO_KINDS_NOT_IMPLEMENTED = frozenset(
    {
        "WorkloadGroup",
        "EnvoyFilter",
        "ProxyConfig",
        "PeerAuthentication",
        "RequestAuthentication",
        "Telemetry",
        "WasmPlugin",
        "TrafficExtension",
    }
)

# Every Istio kind: what ``validate --istio`` reports problems of.
ISTIO_KINDS = ISTIO_KINDS_NOT_IMPLEMENTED | {
    kind for kind, (_, versions) in KINDS.items() if any(".istio.io/" in v for v in versions)
}
