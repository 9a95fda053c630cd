"""What `meshfast run` was told, and the compile options that follow from it.

Kept free of Trio (and of the core) so that `meshfast run` can compile its config and
start the data plane before it imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from meshfast.config import CompileOptions
    from meshfast.config.identity import MeshIdentity
    from meshfast.config.ir import PathNormalization

# Seconds between DNS refreshes (the resolver's default; Envoy uses the record TTL).
DEFAULT_REFRESH_S = 30.0


class SidecarSettings(NamedTuple):
    """What ``meshfast run`` was told on its command line.

    A NamedTuple, not a dataclass: ``meshfast run`` builds one before it starts the data
    plane, and ``dataclasses`` (with ``inspect``) costs ~4 ms of that start."""

    admin: str = "127.0.0.1:15000"
    namespace: str = "default"
    outbound: str = "127.0.0.1:15001"
    inbound: str = "127.0.0.1:15006"
    app: str | None = None
    drain_timeout: float = 5.0
    sources: tuple[str, ...] = ()
    gateway: bool = False  # serve the Gateways' servers instead of sidecar listeners
    gateway_bind: str = "0.0.0.0"
    locality: str = ""  # the sidecar's own region/zone/subzone
    labels: Mapping[str, str] = MappingProxyType({})  # this workload's labels
    root_namespace: str = "istio-system"  # meshConfig.rootNamespace (AuthorizationPolicy)
    trust_domain: str = "cluster.local"  # meshConfig.trustDomain (AuthorizationPolicy)
    trust_domain_aliases: tuple[str, ...] = ()  # meshConfig.trustDomainAliases
    dns_refresh: float = DEFAULT_REFRESH_S  # seconds between DNS refreshes; 0: never
    certs: MeshIdentity | None = None  # --certs: this workload's mesh identity
    ca: str | None = None  # --ca: the mesh CA that renews --certs before it expires
    path_normalization: PathNormalization = "base"  # --path-normalization
    original_dst_header: bool = False  # --original-dst-header
    # --request-headers-timeout, --idle-timeout, --stream-idle-timeout (seconds),
    # --max-connections; 0: default
    request_headers_timeout: float = 0.0
    idle_timeout: float = 0.0
    stream_idle_timeout: float = 0.0
    max_connections: int = 0
    watch: bool = False  # --watch: reload when a file of ``sources`` changes
    read_at_ns: int = 0  # time.time_ns() before ``sources`` were read (--watch's start)


def options_for(s: SidecarSettings, version: int) -> CompileOptions:
    """The options every config of a sidecar is compiled with (start and reloads)."""
    from meshfast.config import CompileOptions, ir

    return CompileOptions(
        namespace=s.namespace,
        outbound=s.outbound,
        inbound=s.inbound,
        app=s.app,
        version=version,
        locality=s.locality,
        labels=dict(s.labels),
        root_namespace=s.root_namespace,
        trust_domain=s.trust_domain,
        trust_domain_aliases=tuple(s.trust_domain_aliases),
        gateway=s.gateway,
        gateway_bind=s.gateway_bind,
        mesh=s.certs,
        path_normalization=s.path_normalization,
        original_dst_header=s.original_dst_header,
        downstream=ir.Downstream(
            request_headers_timeout_ms=round(s.request_headers_timeout * 1000),
            idle_timeout_ms=round(s.idle_timeout * 1000),
            stream_idle_timeout_ms=round(s.stream_idle_timeout * 1000),
            max_connections=min(s.max_connections, 2**32 - 1),
        ),
    )
