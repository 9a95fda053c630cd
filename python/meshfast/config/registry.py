"""The service registry: every service a sidecar may route to, by FQDN.

Services come from Kubernetes ``Service`` documents first, then from ``ServiceEntry`` documents
(each in (namespace, name) order).  The first definition of a host wins; a later one for the
same host is ignored.  One ServiceEntry makes one service per host, each with all its ports.

Endpoint labels (what DestinationRule subsets select on):

* ServiceEntry ``endpoints[].labels`` and the labels of WorkloadEntries it selects.
* Kubernetes: an EndpointSlice carries no pod labels, so meshfast gives each endpoint the
  EndpointSlice's own ``metadata.labels`` minus the Kubernetes-reserved ones (keys containing
  ``kubernetes.io/``, e.g. ``kubernetes.io/service-name``).  To model subsets with plain
  Kubernetes documents, write one EndpointSlice per version and label it (``version: v1``).

Port protocols: ServiceEntry ``protocol``; for a Kubernetes Service ``appProtocol``, else the
port name prefix before ``-`` (``http-web`` → HTTP), else TCP for the server-first well-known
ports 25/53/3306/27017, else HTTP (meshfast does not sniff).  HTTP → ``http1``,
HTTP2/GRPC/GRPC-WEB → ``http2``, anything else → ``tcp`` (a TCP listener per port; TLS and
HTTPS ports get an SNI-routed ``tls`` listener instead).
UDP/SCTP Service ports are skipped (never proxied).

Endpoint localities (``region/zone/subzone``, what ``localityLbSetting`` weighs on): ServiceEntry
``endpoints[].locality`` and WorkloadEntry ``locality`` as written; for Kubernetes only the zone
is known (EndpointSlice ``endpoints[].zone``), the region comes from the EndpointSlice's
``topology.kubernetes.io/region`` label, so the locality is ``region/zone``, ``/zone`` (no
region label), ``region`` (no zone) or empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from meshfast.config import hosts, ir
from meshfast.config import resources as r
from meshfast.config.hosts import ip_literal as ip_literal
from meshfast.config.hosts import join_host_port as join_host_port

_T = TypeVar("_T")

SERVER_FIRST_PORTS = frozenset({25, 53, 3306, 27017})
REGION_LABEL = "topology.kubernetes.io/region"

_APP_PROTOCOLS = {
    "kubernetes.io/h2c": "HTTP2",
    "kubernetes.io/ws": "HTTP",
    "grpc-web": "GRPC-WEB",
}


def upstream_protocol(protocol: str | None) -> ir.UpstreamProtocol:
    """HTTP → http1; HTTP2, GRPC, GRPC-WEB → http2; everything else → tcp."""
    p = (protocol or "HTTP").upper()
    if p == "HTTP":
        return "http1"
    if p in ("HTTP2", "GRPC", "GRPC-WEB"):
        return "http2"
    return "tcp"


def k8s_port_protocol(port: r.ServicePortK8s) -> str:
    """Istio protocol of a Kubernetes Service port (appProtocol, name prefix, well-known port)."""
    if port.app_protocol:
        ap = port.app_protocol.lower()
        return _APP_PROTOCOLS.get(ap, ap.upper())
    if port.name:
        prefix = port.name.split("-", 1)[0].lower()
        if prefix in (
            "http",
            "http2",
            "grpc",
            "grpc-web",
            "https",
            "tcp",
            "tls",
            "mongo",
            "mysql",
            "redis",
        ):
            return prefix.upper()
    if port.port in SERVER_FIRST_PORTS:
        return "TCP"
    return "HTTP"


@dataclass(frozen=True)
class ServicePort:
    number: int
    name: str
    protocol: ir.UpstreamProtocol
    target: int | None
    index: int  # position in the defining resource's ports list
    istio_protocol: str = "HTTP"  # upper-case: HTTP, HTTPS, TLS, TCP, GRPC...

    @property
    def tls(self) -> bool:
        """TLS and HTTPS ports: SNI-routed (``outbound|tls|PORT`` listeners)."""
        return self.istio_protocol in ("TLS", "HTTPS")


@dataclass(frozen=True)
class RawEndpoint:
    address: str
    ports: dict[str, int]
    labels: dict[str, str]
    weight: int = 1
    locality: str = ""  # region/zone/subzone


@dataclass
class RegistryService:
    fqdn: str
    namespace: str
    origin: tuple[str, str, str]  # (kind, namespace, name) of the defining resource
    ports: list[ServicePort]
    endpoints: list[RawEndpoint] = field(default_factory=list)
    vip: str | None = None
    # resolution NONE without endpoints: requests go to their original destination.
    original_dst: bool = False

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.number == number), None)

    def endpoints_for(
        self, port: ServicePort, labels: dict[str, str] | None = None
    ) -> list[ir.Endpoint]:
        out = []
        for ep in self.endpoints:
            if labels and any(ep.labels.get(k) != v for k, v in labels.items()):
                continue
            number = ep.ports.get(port.name) or port.target or port.number
            out.append(
                ir.Endpoint(
                    address=join_host_port(ep.address, number),
                    weight=ep.weight,
                    labels=dict(ep.labels),
                    locality=ep.locality,
                )
            )
        return sorted(out, key=lambda e: (e.address, e.weight, sorted(e.labels.items())))


def _locality(text: str | None) -> str:
    return "/".join(part.strip() for part in (text or "").strip().split("/", 2)).rstrip("/")


def by_kind(resources: Iterable[r.Resource], cls: type[_T]) -> list[_T]:
    items = [x for x in resources if isinstance(x, cls)]
    return sorted(items, key=lambda x: (x.metadata.namespace, x.metadata.name))  # type: ignore[attr-defined]


def se_host(host: str, namespace: str) -> str:
    """ServiceEntry hosts are literal, except a dotless host is a short name."""
    h = host.strip().lower()
    return h if "." in h or h.startswith("*") else hosts.expand(h, namespace)


def build_registry(resources: Iterable[r.Resource]) -> dict[str, RegistryService]:
    """Every service by FQDN, in definition order (Kubernetes Services, then ServiceEntries)."""
    resources = list(resources)
    registry: dict[str, RegistryService] = {}
    slices = by_kind(resources, r.EndpointSlice)
    for svc in by_kind(resources, r.Service):
        ns = svc.metadata.namespace
        fqdn = hosts.expand(svc.metadata.name, ns)
        if fqdn in registry:
            continue
        ports = [
            ServicePort(
                number=p.port,
                name=p.name or "",
                protocol=upstream_protocol(k8s_port_protocol(p)),
                target=p.target_port if isinstance(p.target_port, int) else None,
                index=i,
                istio_protocol=k8s_port_protocol(p).upper(),
            )
            for i, p in enumerate(svc.spec.ports)
            if p.protocol == "TCP"
        ]
        rs = RegistryService(fqdn, ns, ("Service", ns, svc.metadata.name), ports)
        ip = svc.spec.cluster_ip
        if ip and ip_literal(ip):
            rs.vip = ip
        for sl in slices:
            if sl.metadata.namespace != ns:
                continue
            if sl.metadata.labels.get("kubernetes.io/service-name") != svc.metadata.name:
                continue
            labels = {k: v for k, v in sl.metadata.labels.items() if "kubernetes.io/" not in k}
            region = sl.metadata.labels.get(REGION_LABEL, "")
            slice_ports = {(p.name or ""): p.port for p in sl.ports if p.port is not None}
            for ep in sl.endpoints:
                if ep.conditions.ready is False:
                    continue
                locality = f"{region}/{ep.zone}" if ep.zone else region
                for addr in ep.addresses:
                    rs.endpoints.append(RawEndpoint(addr, slice_ports, labels, 1, locality))
        registry[fqdn] = rs

    entries = by_kind(resources, r.WorkloadEntry)
    for se in by_kind(resources, r.ServiceEntry):
        ns = se.metadata.namespace
        spec = se.spec
        ports = [
            ServicePort(
                p.number,
                p.name or "",
                upstream_protocol(p.protocol),
                p.target_port,
                i,
                (p.protocol or "HTTP").upper(),
            )
            for i, p in enumerate(spec.ports)
        ]
        raw: list[RawEndpoint] = [
            RawEndpoint(
                e.address, dict(e.ports), dict(e.labels), e.weight or 1, _locality(e.locality)
            )
            for e in spec.endpoints
        ]
        if spec.workload_selector is not None:
            sel = spec.workload_selector.labels
            raw.extend(
                RawEndpoint(
                    we.spec.address,
                    dict(we.spec.ports),
                    dict(we.spec.labels),
                    we.spec.weight or 1,
                    _locality(we.spec.locality),
                )
                for we in entries
                if we.metadata.namespace == ns
                and all(we.spec.labels.get(k) == v for k, v in sel.items())
            )
        vip = next((a for a in spec.addresses if ip_literal(a)), None)
        dns = spec.resolution in ("DNS", "DNS_ROUND_ROBIN")
        for host in spec.hosts:
            fqdn = se_host(host, ns)
            if fqdn in registry:
                continue
            eps = list(raw)
            if not eps and dns and not fqdn.startswith("*"):
                eps = [RawEndpoint(fqdn, {}, {})]
            registry[fqdn] = RegistryService(
                fqdn,
                ns,
                ("ServiceEntry", ns, se.metadata.name),
                ports,
                eps,
                vip,
                original_dst=(spec.resolution or "NONE") == "NONE" and not eps,
            )
    return registry


def resolve(host: str, namespace: str, registry: dict[str, RegistryService]) -> str:
    """A VirtualService/DestinationRule host as an FQDN.

    Known services win (``www.example.com`` stays literal when a ServiceEntry defines it); an
    unknown two-label host (``example.com``) stays literal rather than becoming
    ``example.com.svc.cluster.local``.
    """
    h = host.strip().lower()
    if h in registry:
        return h
    e = hosts.expand(h, namespace)
    if e in registry or h.count(".") != 1:
        return e
    return h


def wildcard_match(pattern: str, fqdn: str) -> bool:
    return pattern == "*" or (pattern.startswith("*.") and fqdn.endswith(pattern[1:]))
