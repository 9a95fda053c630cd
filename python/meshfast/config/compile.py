"""Istio semantics → the flat IR (:mod:`meshfast.config.ir`).

Pure and deterministic: the same Config and options give the same Snapshot, with listeners,
route tables and clusters sorted by name and endpoints sorted by address.

The service registry
--------------------
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
HTTP2/GRPC/GRPC-WEB → ``http2``, anything else → ``tcp`` (a TCP listener per port).
UDP/SCTP Service ports are skipped (never proxied).

Which Sidecar applies: the Sidecars in ``options.namespace``; one without ``workloadSelector``
is preferred, ties broken by name.  Its ``egress[].hosts`` limit which services (and
VirtualService-only hosts) get outbound virtual hosts, listeners and clusters.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from meshfast.config import hosts, ir
from meshfast.config import resources as r
from meshfast.config.duration import parse_ms
from meshfast.config.model import Config

_T = TypeVar("_T")

CONNECT_TIMEOUT_MS = 10_000
SERVER_FIRST_PORTS = frozenset({25, 53, 3306, 27017})

_LB: dict[str | None, ir.LbPolicy] = {
    None: "LEAST_REQUEST",
    "UNSPECIFIED": "LEAST_REQUEST",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "ROUND_ROBIN": "ROUND_ROBIN",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "LEAST_REQUEST",  # rejected by validation
}

_APP_PROTOCOLS = {
    "kubernetes.io/h2c": "HTTP2",
    "kubernetes.io/ws": "HTTP",
    "grpc-web": "GRPC-WEB",
}


@dataclass(frozen=True)
class CompileOptions:
    namespace: str = "default"
    outbound: str = "127.0.0.1:15001"
    inbound: str = "127.0.0.1:15006"
    app: str | None = None
    version: int = 1


# --- registry -----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class RawEndpoint:
    address: str
    ports: dict[str, int]
    labels: dict[str, str]
    weight: int = 1


@dataclass
class RegistryService:
    fqdn: str
    namespace: str
    origin: tuple[str, str, str]  # (kind, namespace, name) of the defining resource
    ports: list[ServicePort]
    endpoints: list[RawEndpoint] = field(default_factory=list)
    vip: str | None = None

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
                )
            )
        return sorted(out, key=lambda e: (e.address, e.weight, sorted(e.labels.items())))


def join_host_port(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _by_kind(resources: Iterable[r.Resource], cls: type[_T]) -> list[_T]:
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
    slices = _by_kind(resources, r.EndpointSlice)
    for svc in _by_kind(resources, r.Service):
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
            slice_ports = {(p.name or ""): p.port for p in sl.ports if p.port is not None}
            for ep in sl.endpoints:
                if ep.conditions.ready is False:
                    continue
                for addr in ep.addresses:
                    rs.endpoints.append(RawEndpoint(addr, slice_ports, labels))
        registry[fqdn] = rs

    entries = _by_kind(resources, r.WorkloadEntry)
    for se in _by_kind(resources, r.ServiceEntry):
        ns = se.metadata.namespace
        spec = se.spec
        ports = [
            ServicePort(p.number, p.name or "", upstream_protocol(p.protocol), p.target_port, i)
            for i, p in enumerate(spec.ports)
        ]
        raw: list[RawEndpoint] = [
            RawEndpoint(e.address, dict(e.ports), dict(e.labels), e.weight or 1)
            for e in spec.endpoints
        ]
        if spec.workload_selector is not None:
            sel = spec.workload_selector.labels
            raw.extend(
                RawEndpoint(
                    we.spec.address, dict(we.spec.ports), dict(we.spec.labels), we.spec.weight or 1
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
                fqdn, ns, ("ServiceEntry", ns, se.metadata.name), ports, eps, vip
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


def _wildcard_match(pattern: str, fqdn: str) -> bool:
    return pattern == "*" or (pattern.startswith("*.") and fqdn.endswith(pattern[1:]))


# --- compile ------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, config: Config, options: CompileOptions) -> None:
        self.options = options
        res = config.resources
        self.registry = build_registry(res)
        self.vss = [
            vs
            for vs in _by_kind(res, r.VirtualService)
            if not vs.spec.gateways or "mesh" in vs.spec.gateways
        ]
        self.drs = _by_kind(res, r.DestinationRule)
        sidecars = [
            s for s in _by_kind(res, r.Sidecar) if s.metadata.namespace == options.namespace
        ]
        sidecars.sort(key=lambda s: (s.spec.workload_selector is not None, s.metadata.name))
        self.sidecar = sidecars[0] if sidecars else None
        # VirtualService host claims: exact FQDNs and wildcard patterns, first by (ns, name).
        self.vs_exact: dict[str, r.VirtualService] = {}
        self.vs_wild: list[tuple[str, r.VirtualService]] = []
        for vs in self.vss:
            for h in vs.spec.hosts:
                fqdn = resolve(h, vs.metadata.namespace, self.registry)
                if fqdn.startswith("*"):
                    if all(p != fqdn for p, _ in self.vs_wild):
                        self.vs_wild.append((fqdn, vs))
                else:
                    self.vs_exact.setdefault(fqdn, vs)
        self.vs_wild.sort(key=lambda pv: -len(pv[0]))

    # -- scoping

    def imported(self, namespace: str, fqdn: str) -> bool:
        if self.sidecar is None or not self.sidecar.spec.egress:
            return True
        own = self.sidecar.metadata.namespace
        for eg in self.sidecar.spec.egress:
            for entry in eg.hosts:
                ns_part, _, host_part = entry.partition("/")
                if ns_part.startswith("~"):
                    continue
                if ns_part == ".":
                    ns_part = own
                if ns_part not in ("*", namespace):
                    continue
                host_part = host_part.lower()
                if host_part == "*" or _wildcard_match(host_part, fqdn):
                    return True
                if fqdn in (host_part, hosts.expand(host_part, namespace)):
                    return True
        return False

    def vs_for(self, fqdn: str) -> r.VirtualService | None:
        vs = self.vs_exact.get(fqdn)
        if vs is not None:
            return vs
        return next((v for p, v in self.vs_wild if _wildcard_match(p, fqdn)), None)

    def dr_for(self, fqdn: str) -> r.DestinationRule | None:
        wild: list[tuple[str, r.DestinationRule]] = []
        for dr in self.drs:
            h = resolve(dr.spec.host, dr.metadata.namespace, self.registry)
            if h == fqdn:
                return dr
            if h.startswith("*") and _wildcard_match(h, fqdn):
                wild.append((h, dr))
        wild.sort(key=lambda hd: -len(hd[0]))
        return wild[0][1] if wild else None

    # -- clusters

    def clusters(self, services: list[RegistryService]) -> list[ir.Cluster]:
        out = []
        for svc in services:
            dr = self.dr_for(svc.fqdn)
            top_lb = dr.spec.traffic_policy.load_balancer if dr and dr.spec.traffic_policy else None
            for port in svc.ports:
                out.append(
                    ir.Cluster(
                        name=f"outbound|{port.number}||{svc.fqdn}",
                        lb=_LB[top_lb.simple if top_lb else None],
                        protocol=port.protocol,
                        connect_timeout_ms=CONNECT_TIMEOUT_MS,
                        endpoints=tuple(svc.endpoints_for(port)),
                    )
                )
                for subset in dr.spec.subsets if dr else ():
                    lb = top_lb
                    if (
                        subset.traffic_policy is not None
                        and subset.traffic_policy.load_balancer is not None
                    ):
                        lb = subset.traffic_policy.load_balancer
                    out.append(
                        ir.Cluster(
                            name=f"outbound|{port.number}|{subset.name}|{svc.fqdn}",
                            lb=_LB[lb.simple if lb else None],
                            protocol=port.protocol,
                            connect_timeout_ms=CONNECT_TIMEOUT_MS,
                            endpoints=tuple(svc.endpoints_for(port, subset.labels)),
                        )
                    )
        return out

    # -- destinations

    def dest_cluster(self, dest: r.Destination, vs_ns: str, this_port: int) -> str:
        host = resolve(dest.host, vs_ns, self.registry)
        svc = self.registry.get(host)
        if dest.port is not None and dest.port.number is not None:
            port = dest.port.number
        elif svc is not None and len(svc.ports) == 1:
            port = svc.ports[0].number
        else:
            port = this_port
        return f"outbound|{port}|{dest.subset or ''}|{host}"

    def weighted(
        self,
        routes: Iterable[r.HTTPRouteDestination | r.RouteDestination],
        vs_ns: str,
        this_port: int,
    ) -> tuple[ir.WeightedCluster, ...]:
        dests = list(routes)
        if len(dests) == 1:
            return (
                ir.WeightedCluster(self.dest_cluster(dests[0].destination, vs_ns, this_port), 100),
            )
        return tuple(
            ir.WeightedCluster(self.dest_cluster(d.destination, vs_ns, this_port), d.weight)
            for d in dests
            if d.weight
        )

    # -- HTTP routes

    def http_routes(
        self, vs: r.VirtualService | None, fqdn: str, port: int
    ) -> tuple[ir.Route, ...]:
        routes: list[ir.Route] = []
        if vs is not None:
            ns = vs.metadata.namespace
            done = False
            for i, http in enumerate(vs.spec.http):
                if done:
                    break
                name = http.name or f"{vs.metadata.name}.{i}"
                action = ir.RouteAction(
                    clusters=self.weighted(http.route, ns, port),
                    timeout_ms=round(parse_ms(http.timeout)) if http.timeout else 0,
                )
                for m in http.match or (None,):
                    if m is not None and m.port is not None and m.port != port:
                        continue
                    rm = _route_match(m)
                    routes.append(ir.Route(name=name, match_=rm, action=action))
                    if _catch_all(rm):
                        done = True
                        break
        if not routes:
            routes.append(
                ir.Route(
                    name="default",
                    match_=ir.RouteMatch(),
                    action=ir.RouteAction(
                        clusters=(ir.WeightedCluster(f"outbound|{port}||{fqdn}", 100),)
                    ),
                )
            )
        return tuple(routes)

    # -- TCP routes

    def tcp_routes(self, svc: RegistryService, port: int) -> tuple[ir.TcpRoute, ...]:
        routes = []
        vs = self.vs_for(svc.fqdn)
        if vs is not None:
            for i, tcp in enumerate(vs.spec.tcp):
                if tcp.match and not any(m.port in (None, port) for m in tcp.match):
                    continue
                clusters = self.weighted(tcp.route, vs.metadata.namespace, port)
                routes.append(ir.TcpRoute(name=f"{vs.metadata.name}.tcp.{i}", clusters=clusters))
        if not routes:
            routes.append(
                ir.TcpRoute(
                    name="default",
                    clusters=(ir.WeightedCluster(f"outbound|{port}||{svc.fqdn}", 100),),
                )
            )
        return tuple(routes)

    # -- the snapshot

    def snapshot(self) -> ir.Snapshot:
        opts = self.options
        services = [s for s in self.registry.values() if self.imported(s.namespace, s.fqdn)]
        clusters = self.clusters(services)
        listeners: list[ir.Listener] = []
        route_tables: list[ir.RouteTable] = []

        # Outbound HTTP: virtual hosts for services, then for VirtualService-only hosts.
        pending: list[tuple[tuple[bool, str, int], str, list[str], tuple[ir.Route, ...]]] = []
        for svc in services:
            http_ports = sorted(p.number for p in svc.ports if p.protocol != "tcp")
            if not http_ports:
                continue
            default = 80 if 80 in http_ports else http_ports[0]
            vs = self.vs_for(svc.fqdn)
            for number in http_ports:
                doms = hosts.domains(svc.fqdn, number, default_port=number == default)
                key = (svc.namespace != opts.namespace, svc.fqdn, number)
                pending.append(
                    (key, f"{svc.fqdn}:{number}", doms, self.http_routes(vs, svc.fqdn, number))
                )
        for vs in self.vss:
            for h in vs.spec.hosts:
                fqdn = resolve(h, vs.metadata.namespace, self.registry)
                if fqdn in self.registry or not self.imported(vs.metadata.namespace, fqdn):
                    continue
                if self.vs_exact.get(fqdn, vs) is not vs:
                    continue
                if fqdn.startswith("*") and next(v for p, v in self.vs_wild if p == fqdn) is not vs:
                    continue
                doms = hosts.domains(fqdn, 80, default_port=True)
                key = (vs.metadata.namespace != opts.namespace, fqdn, 80)
                pending.append((key, f"{fqdn}:80", doms, self.http_routes(vs, fqdn, 80)))
        pending.sort(key=lambda p: p[0])
        taken: set[str] = set()
        vhosts = []
        seen_names: set[str] = set()
        for _, name, doms, routes in pending:
            if name in seen_names:
                continue
            seen_names.add(name)
            mine = [d for d in doms if d not in taken]
            taken.update(mine)
            if mine:
                vhosts.append(ir.VirtualHost(name=name, domains=tuple(mine), routes=routes))
        vhosts.sort(key=lambda v: v.name)
        route_tables.append(ir.RouteTable(name="outbound", virtual_hosts=tuple(vhosts)))
        listeners.append(
            ir.Listener(
                name="outbound", address=opts.outbound, protocol="http", route_table="outbound"
            )
        )

        # Outbound TCP: one listener per port.
        out_ip = _host_of(opts.outbound)
        used: set[int] = set()
        for svc in services:
            for port in svc.ports:
                if port.protocol != "tcp" or port.number in used:
                    continue
                used.add(port.number)
                ip = svc.vip or out_ip
                listeners.append(
                    ir.Listener(
                        name=f"outbound|tcp|{port.number}",
                        address=join_host_port(ip.strip("[]"), port.number),
                        protocol="tcp",
                        tcp_routes=self.tcp_routes(svc, port.number),
                    )
                )

        # Inbound.
        if opts.app is not None:
            listeners.append(
                ir.Listener(
                    name="inbound", address=opts.inbound, protocol="http", route_table="inbound"
                )
            )
            route_tables.append(_inbound_table("inbound", "inbound|app"))
            clusters.append(
                ir.Cluster(
                    name="inbound|app",
                    lb="ROUND_ROBIN",
                    protocol="http1",
                    connect_timeout_ms=CONNECT_TIMEOUT_MS,
                    endpoints=(ir.Endpoint(address=opts.app),),
                )
            )
        if self.sidecar is not None:
            in_ip = _host_of(opts.inbound)
            for ing in self.sidecar.spec.ingress:
                if ing.port.number is None or not ing.default_endpoint:
                    continue
                port_number = ing.port.number
                proto = upstream_protocol(ing.port.protocol)
                cluster = f"inbound|{port_number}||"
                name = f"inbound|{port_number}"
                address = join_host_port((ing.bind or in_ip).strip("[]"), port_number)
                if proto == "tcp":
                    listeners.append(
                        ir.Listener(
                            name=name,
                            address=address,
                            protocol="tcp",
                            tcp_routes=(
                                ir.TcpRoute(
                                    name="default", clusters=(ir.WeightedCluster(cluster, 100),)
                                ),
                            ),
                        )
                    )
                else:
                    listeners.append(
                        ir.Listener(name=name, address=address, protocol="http", route_table=name)
                    )
                    route_tables.append(_inbound_table(name, cluster))
                clusters.append(
                    ir.Cluster(
                        name=cluster,
                        lb="ROUND_ROBIN",
                        protocol=proto,
                        connect_timeout_ms=CONNECT_TIMEOUT_MS,
                        endpoints=(ir.Endpoint(address=inbound_endpoint(ing.default_endpoint)),),
                    )
                )

        return ir.Snapshot(
            version=opts.version,
            listeners=tuple(sorted(listeners, key=lambda x: x.name)),
            route_tables=tuple(sorted(route_tables, key=lambda x: x.name)),
            clusters=tuple(
                sorted({c.name: c for c in reversed(clusters)}.values(), key=lambda c: c.name)
            ),
        )


def inbound_endpoint(default_endpoint: str) -> str:
    """``0.0.0.0:PORT`` (the instance IP) becomes ``127.0.0.1:PORT``; others are kept."""
    if default_endpoint.startswith("0.0.0.0:"):
        return "127.0.0.1:" + default_endpoint.split(":", 1)[1]
    return default_endpoint


def _inbound_table(name: str, cluster: str) -> ir.RouteTable:
    route = ir.Route(
        name="default",
        match_=ir.RouteMatch(),
        action=ir.RouteAction(clusters=(ir.WeightedCluster(cluster, 100),)),
    )
    return ir.RouteTable(
        name=name, virtual_hosts=(ir.VirtualHost(name=name, domains=("*",), routes=(route,)),)
    )


def _host_of(address: str) -> str:
    host, _, _ = address.rpartition(":")
    return host or address


def _string_match(m: r.StringMatch | None, ignore_case: bool = False) -> ir.StringMatch | None:
    if m is None:
        return None
    if m.exact is not None:
        return ir.StringMatch(kind="exact", value=m.exact, ignore_case=ignore_case)
    if m.prefix is not None:
        return ir.StringMatch(kind="prefix", value=m.prefix, ignore_case=ignore_case)
    if m.regex is not None:
        return ir.StringMatch(kind="regex", value=m.regex)
    return None


def _presence(m: r.StringMatch) -> bool:
    return (m.exact is None and m.prefix is None and m.regex is None) or m.regex == "*"


_PSEUDO = frozenset({"uri", "scheme", "method", "authority"})


def _route_match(m: r.HTTPMatchRequest | None) -> ir.RouteMatch:
    if m is None:
        return ir.RouteMatch()
    headers = [
        ir.HeaderMatch(name=k.lower(), value=None if _presence(v) else _string_match(v))
        for k, v in m.headers.items()
        if k.lower() not in _PSEUDO
    ]
    headers.extend(
        ir.HeaderMatch(
            name=k.lower(), value=None if _presence(v) else _string_match(v), invert=True
        )
        for k, v in m.without_headers.items()
        if k.lower() not in _PSEUDO
    )
    return ir.RouteMatch(
        path=_string_match(m.uri, m.ignore_uri_case),
        method=_string_match(m.method),
        authority=_string_match(m.authority),
        scheme=_string_match(m.scheme),
        headers=tuple(headers),
        query_params=tuple(
            ir.QueryMatch(name=k, value=None if _presence(v) else _string_match(v))
            for k, v in m.query_params.items()
        ),
    )


def _catch_all(m: ir.RouteMatch) -> bool:
    path_all = m.path is None or (m.path.kind == "prefix" and m.path.value == "/")
    return (
        path_all
        and m.method is None
        and m.authority is None
        and m.scheme is None
        and not m.headers
        and not m.query_params
    )


def compile_config(config: Config, options: CompileOptions) -> ir.Snapshot:
    """The IR snapshot for ``config`` as seen by a sidecar with ``options``."""
    return _Compiler(config, options).snapshot()
