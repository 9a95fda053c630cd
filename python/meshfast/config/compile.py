"""Istio semantics → the flat IR (:mod:`meshfast.config.ir`).

Pure and deterministic: the same Config and options give the same Snapshot, with listeners,
route tables and clusters sorted by name and endpoints sorted by address.  The service registry
is built by :mod:`meshfast.config.registry`; HTTP rules become routes in
:mod:`meshfast.config.routes`.

Which Sidecar applies: the Sidecars in ``options.namespace``; one without ``workloadSelector``
is preferred, ties broken by name.  Its ``egress[].hosts`` limit which services (and
VirtualService-only hosts) get outbound virtual hosts, listeners and clusters.

TLS/HTTPS service ports and ``CompileOptions.gateway`` (the Gateways' servers instead of the
sidecar's listeners) are compiled by :mod:`meshfast.config.listeners`.

Delegate VirtualServices are merged into their roots first (:mod:`meshfast.config.delegate`);
a VirtualService without hosts produces no routes of its own.

DestinationRule traffic policies (which ``loadBalancer`` applies to which cluster, consistent
hashing, locality weights) are resolved by :mod:`meshfast.config.policy`.

``HttpFilter`` resources become ``FilterRef`` entries on routes
(:mod:`meshfast.config.http_filter`).

AuthorizationPolicies that apply to this workload (:mod:`meshfast.config.authz`) go in the
snapshot once, in their HTTP and TCP forms; the inbound listeners are marked to enforce them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshfast.config import authz as authz_mod
from meshfast.config import delegate as delegate_mod
from meshfast.config import failure_rate, hosts, http_filter, ir, load_balancer, policy
from meshfast.config import http_route as hr
from meshfast.config import listeners as listeners_mod
from meshfast.config import resources as r
from meshfast.config import routes as routes_mod
from meshfast.config.gateway import MESH
from meshfast.config.identity import MeshIdentity as MeshIdentity
from meshfast.config.model import Config
from meshfast.config.registry import (
    RegistryService,
    build_registry,
    by_kind,
    join_host_port,
    resolve,
    upstream_protocol,
    wildcard_match,
)

CONNECT_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class CompileOptions:
    namespace: str = "default"
    outbound: str = "127.0.0.1:15001"
    inbound: str = "127.0.0.1:15006"
    app: str | None = None
    version: int = 1
    locality: str = ""  # the sidecar's own region/zone/subzone (localityLbSetting)
    labels: dict[str, str] = field(default_factory=dict)  # the sidecar's (failoverPriority)
    gateway: bool = False  # serve the Gateways' servers instead of sidecar listeners
    gateway_bind: str = "0.0.0.0"  # the IP of gateway listeners whose server has no bind
    mesh: MeshIdentity | None = None  # ISTIO_MUTUAL and mTLS on inbound listeners
    # meshConfig pathNormalization: paths are matched and forwarded normalized.
    path_normalization: ir.PathNormalization = "base"
    # x-envoy-original-dst-host honoured (Envoy's use_http_header); off by default.
    original_dst_header: bool = False
    downstream: ir.Downstream = field(default_factory=ir.Downstream)  # client connection limits
    # meshConfig.rootNamespace: its AuthorizationPolicies apply to every namespace.
    root_namespace: str = authz_mod.ROOT_NAMESPACE
    # meshConfig.trustDomain and trustDomainAliases: principals of any of them (or of
    # "cluster.local") in AuthorizationPolicies stand for one another.
    trust_domain: str = authz_mod.CLUSTER_LOCAL
    trust_domain_aliases: tuple[str, ...] = ()


# --- compile ------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, config: Config, options: CompileOptions) -> None:
        self.options = options
        res = config.resources
        self.registry = build_registry(res)
        self.sources = config.sources
        # Root VirtualServices with their delegates merged in; delegates (no hosts) never
        # route on their own.
        every_vs = by_kind(res, r.VirtualService)
        by_key = delegate_mod.index(every_vs)
        self.all_vss = [
            delegate_mod.merged(vs, by_key) for vs in every_vs if not delegate_mod.is_delegate(vs)
        ]
        self.gateways = by_kind(res, r.Gateway)
        self.vss = [vs for vs in self.all_vss if not vs.spec.gateways or "mesh" in vs.spec.gateways]
        self.drs = by_kind(res, r.DestinationRule)
        sidecars = [s for s in by_kind(res, r.Sidecar) if s.metadata.namespace == options.namespace]
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
        self.authz = authz_mod.policies_for(
            res,
            options.namespace,
            options.labels,
            options.root_namespace,
            (options.trust_domain, *options.trust_domain_aliases),
        )

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
                if host_part == "*" or wildcard_match(host_part, fqdn):
                    return True
                if fqdn in (host_part, hosts.expand(host_part, namespace)):
                    return True
        return False

    def vs_for(self, fqdn: str) -> r.VirtualService | None:
        vs = self.vs_exact.get(fqdn)
        if vs is not None:
            return vs
        return next((v for p, v in self.vs_wild if wildcard_match(p, fqdn)), None)

    def dr_for(self, fqdn: str) -> r.DestinationRule | None:
        wild: list[tuple[str, r.DestinationRule]] = []
        for dr in self.drs:
            h = resolve(dr.spec.host, dr.metadata.namespace, self.registry)
            if h == fqdn:
                return dr
            if h.startswith("*") and wildcard_match(h, fqdn):
                wild.append((h, dr))
        wild.sort(key=lambda hd: -len(hd[0]))
        return wild[0][1] if wild else None

    # -- clusters

    def clusters(self, services: list[RegistryService]) -> list[ir.Cluster]:
        """One cluster per service port, plus one per DestinationRule subset and port.

        The blocks that apply are chosen by :func:`policy.traffic_policy_for`.
        """
        out = []
        for svc in services:
            dr = self.dr_for(svc.fqdn)
            top = dr.spec.traffic_policy if dr else None
            for port in svc.ports:
                out.append(
                    self.cluster(
                        f"outbound|{port.number}||{svc.fqdn}",
                        port.protocol,
                        svc.endpoints_for(port),
                        policy.traffic_policy_for(top, None, port.number),
                        original_dst=svc.original_dst,
                        dr=dr,
                    )
                )
                out.extend(
                    self.cluster(
                        f"outbound|{port.number}|{subset.name}|{svc.fqdn}",
                        port.protocol,
                        svc.endpoints_for(port, subset.labels),
                        policy.traffic_policy_for(top, subset.traffic_policy, port.number),
                        original_dst=svc.original_dst,
                        dr=dr,
                    )
                    for subset in (dr.spec.subsets if dr else ())
                )
        return out

    def cluster(
        self,
        name: str,
        protocol: ir.UpstreamProtocol,
        endpoints: list[ir.Endpoint],
        applied: policy.Applied,
        *,
        original_dst: bool = False,
        dr: r.DestinationRule | None = None,
    ) -> ir.Cluster:
        """``original_dst``: Istio's resolution NONE (no endpoints) or PASSTHROUGH load
        balancing: each request goes where it was going (iptables capture) or to the
        ``x-envoy-original-dst-host`` header's address."""
        lb = applied.load_balancer
        endpoints = list(
            policy.locality_lb(endpoints, applied, self.options.locality, self.options.labels)
        )
        return ir.Cluster(
            name=name,
            lb=load_balancer.override(dr.metadata.annotations if dr else None)
            or policy.LB[lb.simple if lb else None],
            protocol=protocol,
            connect_timeout_ms=policy.connect_timeout_ms(
                applied.connection_pool, CONNECT_TIMEOUT_MS
            ),
            endpoints=tuple(endpoints),
            hash=policy.hash_policy(lb.consistent_hash if lb else None),
            outlier=policy.outlier_detection(applied.outlier_detection),
            warmup=policy.warmup(lb),
            original_dst=original_dst or (lb is not None and lb.simple == "PASSTHROUGH"),
            tls=policy.upstream_tls(
                applied.tls, lambda path: self.source_path(dr, path), self.options.mesh
            ),
            limits=policy.connection_limits(applied.connection_pool),
            failure_rate=failure_rate.breaker(dr.metadata.annotations) if dr else None,
        )

    def source_path(self, dr: r.DestinationRule | None, path: str) -> str:
        """A certificate path as written, made absolute against the file that named it."""
        source = (
            self.sources.get(("DestinationRule", dr.metadata.namespace, dr.metadata.name))
            if dr
            else None
        )
        if not source or source.startswith("<") or os.path.isabs(path):
            return path
        return os.path.abspath(os.path.join(os.path.dirname(source), path))

    # -- destinations

    def dest_cluster(self, dest: hr.Destination, vs_ns: str, this_port: int) -> str:
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
        self, routes: Iterable[r.RouteDestination], vs_ns: str, this_port: int
    ) -> tuple[ir.WeightedCluster, ...]:
        return routes_mod.weighted(routes, lambda d: self.dest_cluster(d, vs_ns, this_port))

    # -- config-time (SEL) match fields

    def proxy(self, gateway: str = MESH) -> routes_mod.Proxy:
        """This proxy as seen from ``gateway`` (``mesh``: the sidecar; else ``ns/name``)."""
        o = self.options
        return routes_mod.Proxy(gateway=gateway, namespace=o.namespace, labels=o.labels)

    @staticmethod
    def tcp_applies(tcp: r.TCPRoute, vs_ns: str, port: int, proxy: routes_mod.Proxy) -> bool:
        """No ``match``, or one entry for ``port`` that applies to ``proxy``."""
        return not tcp.match or any(
            m.port in (None, port) and routes_mod.applies(m, vs_ns, proxy) for m in tcp.match
        )

    # -- HTTP routes

    def http_routes(
        self, vs: r.VirtualService | None, fqdn: str, port: int
    ) -> tuple[ir.Route, ...]:
        routes: list[ir.Route] = []
        if vs is not None:
            ns = vs.metadata.namespace
            routes = routes_mod.http_routes(
                vs, port, lambda d: self.dest_cluster(d, ns, port), self.proxy()
            )
        if not routes:
            routes.append(
                ir.Route(
                    name="default",
                    match_=ir.RouteMatch(),
                    action=ir.RouteAction(
                        clusters=(ir.WeightedCluster(f"outbound|{port}||{fqdn}", 100),),
                        retry=routes_mod.DEFAULT_RETRY,
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
                if not self.tcp_applies(tcp, vs.metadata.namespace, port, self.proxy()):
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
        if opts.gateway:
            return listeners_mod.gateway_snapshot(self)
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
                if port.protocol != "tcp" or port.tls or port.number in used:
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

        # Outbound TLS (TLS and HTTPS ports): one SNI-routed listener per port.
        listeners.extend(listeners_mod.sidecar_tls_listeners(self, services, used))

        # Inbound.
        # With a mesh identity, HTTP inbound listeners take mTLS from other sidecars and, as
        # Istio's default PERMISSIVE mode, plaintext too.
        inbound_tls = (
            ir.TlsServer(
                cert_chain=opts.mesh.cert_chain,
                private_key=opts.mesh.private_key,
                client_ca=opts.mesh.root_cert,
                permissive=True,
                forward_client_cert=True,
            )
            if opts.mesh is not None
            else None
        )
        if opts.app is not None:
            listeners.append(
                ir.Listener(
                    name="inbound",
                    address=opts.inbound,
                    protocol="http",
                    route_table="inbound",
                    tls=inbound_tls,
                    authz=True,
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
                            authz=True,
                        )
                    )
                else:
                    listeners.append(
                        ir.Listener(
                            name=name,
                            address=address,
                            protocol="http",
                            route_table=name,
                            tls=inbound_tls,
                            authz=True,
                        )
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
            path_normalization=opts.path_normalization,
            original_dst_header=opts.original_dst_header,
            downstream=opts.downstream,
            authz=tuple(self.authz),
            authz_tcp=tuple(authz_mod.tcp_form(p) for p in self.authz),
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


def compile_config(config: Config, options: CompileOptions) -> ir.Snapshot:
    """The IR snapshot for ``config`` as seen by a sidecar with ``options``."""
    compiler = _Compiler(config, options)
    return http_filter.attach(
        compiler.snapshot(), config.resources, compiler.registry, config.filters
    )
