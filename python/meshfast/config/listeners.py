"""Listeners beyond the sidecar's outbound HTTP/TCP ones: SNI-routed TLS ports and Gateways.

Sidecar mode (:func:`sidecar_tls_listeners`): a service port whose protocol is TLS or HTTPS gets
``outbound|tls|PORT`` (protocol ``tls``, the ClientHello passed through untouched) instead of a
plain TCP listener.  Its SNI routes, first match wins:

1. the ``tls[]`` rules of the VirtualServices of the services on the port (``match.port`` unset
   or equal), in service order (own namespace first, then by FQDN);
2. with several services on the port, one route per service that got no rule, matching its
   host name (Istio matches SNI against the host when services share a port);
3. with exactly one service on the port, a catch-all (``*``) to its default cluster: a TLS port
   without a VirtualService acts as plain TCP.

The listener binds the services' common VIP when they have one, else the outbound IP.

Gateway mode (:func:`gateway_snapshot`, ``meshfast run --gateway``): only the Gateways'
servers are served, one listener per port, named ``gateway|PORT`` and bound to the first
server's ``bind`` (else ``CompileOptions.gateway_bind``).  Every service still gets its
clusters.  Per :func:`meshfast.config.gateway.server_kind`:

* http / https: route table ``gateway|PORT``; one virtual host per intersection of a bound
  VirtualService host with a server host (see :mod:`meshfast.config.gateway`), its routes
  compiled as for a sidecar.  Several VirtualServices for one host are merged: routes in
  (namespace, name) order, catch-alls moved to the end.  ``tls.httpsRedirect`` servers turn
  their virtual hosts (and their own hosts without a VirtualService) into one 301 to https.
  https adds ``Listener.tls`` (``SIMPLE``; ``MUTUAL`` also requires client certificates);
  relative certificate paths are relative to the folder of the Gateway's YAML file.
* tls (PASSTHROUGH): SNI routes from the bound VirtualServices' ``tls[]`` rules, each SNI host
  narrowed to the server hosts it falls in.
* tcp: TCP routes from the bound VirtualServices' ``tcp[]`` rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from meshfast.config import gateway as g
from meshfast.config import hosts, ir
from meshfast.config import resources as r
from meshfast.config import routes as routes_mod
from meshfast.config.authz import tcp_form as authz_tcp_form
from meshfast.config.http_route import Destination
from meshfast.config.registry import RegistryService, join_host_port, resolve

if TYPE_CHECKING:
    from meshfast.config.compile import _Compiler

HTTPS_REDIRECT = ir.Route(
    name="https-redirect",
    match_=ir.RouteMatch(),
    action=ir.RouteAction(redirect=ir.Redirect(scheme="https", code=301)),
)


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _host_of(address: str) -> str:
    host, _, _ = address.rpartition(":")
    return host or address


# --- SNI routes ---------------------------------------------------------------------------


def sni_routes(
    c: _Compiler,
    vs: r.VirtualService,
    port: int,
    narrow: Sequence[tuple[str, str]] | None = None,
    gateway: str = g.MESH,
) -> list[ir.SniRoute]:
    """The ``tls[]`` rules of ``vs`` that apply on ``port``, in order.

    Match entries that do not apply to this proxy seen from ``gateway`` are skipped
    (:func:`meshfast.config.routes.applies`); a rule left without SNI hosts has no route.

    ``narrow``: (server host, Gateway namespace) pairs; each SNI host is replaced by its
    intersections with them (and dropped when it has none).
    """
    ns = vs.metadata.namespace
    proxy = c.proxy(gateway)
    out = []
    for i, rule in enumerate(vs.spec.tls):
        sni: list[str] = []
        for m in rule.match:
            if m.port is not None and m.port != port:
                continue
            if not routes_mod.applies(m, ns, proxy):
                continue
            for h in m.sni_hosts:
                fqdn = resolve(h, ns, c.registry)
                if narrow is None:
                    sni.append(fqdn)
                    continue
                for server_host, gw_ns in narrow:
                    x = g.server_host_matches(fqdn, ns, server_host, gw_ns)
                    if x is not None:
                        sni.append(x)
        if not sni:
            continue
        out.append(
            ir.SniRoute(
                name=f"{vs.metadata.name}.tls.{i}",
                sni_hosts=_dedupe(sni),
                clusters=c.weighted(rule.route, ns, port),
            )
        )
    return out


def _default_cluster(svc: RegistryService, port: int) -> tuple[ir.WeightedCluster, ...]:
    return (ir.WeightedCluster(f"outbound|{port}||{svc.fqdn}", 100),)


def sidecar_tls_listeners(
    c: _Compiler, services: Sequence[RegistryService], taken_ports: set[int]
) -> list[ir.Listener]:
    """``outbound|tls|PORT`` for every TLS/HTTPS service port not in ``taken_ports``."""
    by_port: dict[int, list[RegistryService]] = {}
    for svc in services:
        for port in svc.ports:
            if port.tls and port.number not in taken_ports:
                group = by_port.setdefault(port.number, [])
                if svc not in group:
                    group.append(svc)
    own = c.options.namespace
    out_ip = _host_of(c.options.outbound)
    listeners = []
    for number, svcs in sorted(by_port.items()):
        svcs.sort(key=lambda s: (s.namespace != own, s.fqdn))
        routes: list[ir.SniRoute] = []
        seen: set[tuple[str, str]] = set()
        uncovered = []
        for svc in svcs:
            vs = c.vs_for(svc.fqdn)
            mine = []
            if vs is not None:
                key = (vs.metadata.namespace, vs.metadata.name)
                mine = sni_routes(c, vs, number)
                if key not in seen:
                    seen.add(key)
                    routes.extend(mine)
            if not mine:
                uncovered.append(svc)
        if len(svcs) == 1:
            routes.append(
                ir.SniRoute(
                    name="default", sni_hosts=("*",), clusters=_default_cluster(svcs[0], number)
                )
            )
        else:
            routes.extend(
                ir.SniRoute(
                    name=svc.fqdn, sni_hosts=(svc.fqdn,), clusters=_default_cluster(svc, number)
                )
                for svc in uncovered
            )
        vips = {s.vip for s in svcs}
        ip = vips.pop() if len(vips) == 1 else None
        listeners.append(
            ir.Listener(
                name=f"outbound|tls|{number}",
                address=join_host_port((ip or out_ip).strip("[]"), number),
                protocol="tls",
                sni_routes=tuple(routes),
            )
        )
    return listeners


# --- Gateways -----------------------------------------------------------------------------

Bound = tuple[r.Gateway, g.Server]


class _Binder:
    """Which VirtualServices each Gateway binds, in (namespace, name) order."""

    def __init__(self, c: _Compiler) -> None:
        self.c = c
        self.by_gateway: dict[str, list[r.VirtualService]] = {}
        for vs in c.all_vss:
            for key in g.bound_gateways(vs.spec.gateways, vs.metadata.namespace):
                self.by_gateway.setdefault(key, []).append(vs)

    def bound(self, gw: r.Gateway) -> list[r.VirtualService]:
        return self.by_gateway.get(g.gateway_key(gw.metadata.namespace, gw.metadata.name), [])

    def hosts(self, vs: r.VirtualService, gw: r.Gateway, server: g.Server) -> list[str]:
        """The intersections of the VirtualService's hosts with the server's hosts."""
        ns = vs.metadata.namespace
        out = []
        for h in vs.spec.hosts:
            fqdn = resolve(h, ns, self.c.registry)
            for sh in server.hosts:
                x = g.server_host_matches(fqdn, ns, sh, gw.metadata.namespace)
                if x is not None:
                    out.append(x)
        return list(_dedupe(out))


def _merge(per_vs: list[list[ir.Route]]) -> tuple[ir.Route, ...]:
    if len(per_vs) == 1:
        return tuple(per_vs[0])
    routes = [rt for rs in per_vs for rt in rs]
    rest = [rt for rt in routes if not routes_mod.catch_all(rt.match_)]
    return tuple(rest + [rt for rt in routes if routes_mod.catch_all(rt.match_)])


def _http_table(
    c: _Compiler, b: _Binder, name: str, port: int, servers: list[Bound]
) -> ir.RouteTable:
    # host -> [(vs, gateway key)], first binding wins
    entries: dict[str, list[tuple[r.VirtualService, str]]] = {}
    redirect: set[str] = set()
    for gw, server in servers:
        key = g.gateway_key(gw.metadata.namespace, gw.metadata.name)
        https_redirect = server.tls is not None and server.tls.https_redirect
        for vs in b.bound(gw):
            if not vs.spec.http:
                continue
            for x in b.hosts(vs, gw, server):
                bucket = entries.setdefault(x, [])
                if all(v is not vs for v, _ in bucket):
                    bucket.append((vs, key))
                if https_redirect:
                    redirect.add(x)
        if https_redirect:
            for sh in server.hosts:
                x = g.split_server_host(sh, gw.metadata.namespace)[1]
                entries.setdefault(x, [])
                redirect.add(x)
    vhosts = []
    taken: set[str] = set()
    for host in sorted(entries):
        if host in redirect:
            routes: tuple[ir.Route, ...] = (HTTPS_REDIRECT,)
        else:
            per_vs = []
            for vs, key in entries[host]:
                ns = vs.metadata.namespace

                def dest(d: Destination, ns: str = ns) -> str:
                    return c.dest_cluster(d, ns, port)

                per_vs.append(routes_mod.http_routes(vs, port, dest, c.proxy(key)))
            routes = _merge([rs for rs in per_vs if rs])
        if not routes:
            continue
        doms = [d for d in hosts.domains(host, port, default_port=True) if d not in taken]
        taken.update(doms)
        if doms:
            vhosts.append(ir.VirtualHost(name=f"{host}:{port}", domains=tuple(doms), routes=routes))
    return ir.RouteTable(name=name, virtual_hosts=tuple(vhosts))


def _cert_path(c: _Compiler, gw: r.Gateway, path: str) -> str:
    source = c.sources.get(("Gateway", gw.metadata.namespace, gw.metadata.name))
    if not source or source.startswith("<") or os.path.isabs(path):
        return path
    return os.path.abspath(os.path.join(os.path.dirname(source), path))


def tls_server(c: _Compiler, gw: r.Gateway, server: g.Server) -> ir.TlsServer:
    tls = server.tls
    assert tls is not None
    client_ca = None
    if tls.mode == "MUTUAL" and tls.ca_certificates:
        client_ca = _cert_path(c, gw, tls.ca_certificates)
    min_version = tls.min_protocol_version
    return ir.TlsServer(
        cert_chain=_cert_path(c, gw, tls.server_certificate or ""),
        private_key=_cert_path(c, gw, tls.private_key or ""),
        client_ca=client_ca,
        min_version=min_version if min_version in ("TLSV1_2", "TLSV1_3") else None,
    )


def _sni_routes(c: _Compiler, b: _Binder, port: int, servers: list[Bound]) -> list[ir.SniRoute]:
    out = []
    seen: set[tuple[str, str]] = set()
    for gw, server in servers:
        narrow = [(sh, gw.metadata.namespace) for sh in server.hosts]
        for vs in b.bound(gw):
            key = (vs.metadata.namespace, vs.metadata.name)
            if key in seen or not b.hosts(vs, gw, server):
                continue
            gw_key = g.gateway_key(gw.metadata.namespace, gw.metadata.name)
            routes = sni_routes(c, vs, port, narrow, gateway=gw_key)
            if routes:
                seen.add(key)
                out.extend(routes)
    return out


def _tcp_routes(c: _Compiler, b: _Binder, port: int, servers: list[Bound]) -> list[ir.TcpRoute]:
    out = []
    seen: set[tuple[str, str]] = set()
    for gw, server in servers:
        for vs in b.bound(gw):
            key = (vs.metadata.namespace, vs.metadata.name)
            if key in seen or not b.hosts(vs, gw, server):
                continue
            seen.add(key)
            proxy = c.proxy(g.gateway_key(gw.metadata.namespace, gw.metadata.name))
            for i, tcp in enumerate(vs.spec.tcp):
                if not c.tcp_applies(tcp, vs.metadata.namespace, port, proxy):
                    continue
                out.append(
                    ir.TcpRoute(
                        name=f"{vs.metadata.name}.tcp.{i}",
                        clusters=c.weighted(tcp.route, vs.metadata.namespace, port),
                    )
                )
    return out


def gateway_snapshot(c: _Compiler) -> ir.Snapshot:
    """The snapshot of ``meshfast run --gateway``: the Gateways' servers and every cluster."""
    opts = c.options
    clusters = c.clusters(list(c.registry.values()))
    b = _Binder(c)
    by_port: dict[int, list[Bound]] = {}
    for gw in c.gateways:
        for server in gw.spec.servers:
            by_port.setdefault(server.port.number, []).append((gw, server))
    listeners: list[ir.Listener] = []
    tables: list[ir.RouteTable] = []
    enforce = bool(c.authz)  # the gateway workload's AuthorizationPolicies (none: unmarked)
    for number, servers in sorted(by_port.items()):
        first_gw, first = servers[0]
        kind = g.server_kind(first)
        name = f"gateway|{number}"
        address = join_host_port((first.bind or opts.gateway_bind).strip("[]"), number)
        if kind in ("http", "https"):
            tables.append(_http_table(c, b, name, number, servers))
            tls = tls_server(c, first_gw, first) if kind == "https" else None
            listeners.append(
                ir.Listener(
                    name=name,
                    address=address,
                    protocol="http",
                    route_table=name,
                    tls=tls,
                    authz=enforce,
                )
            )
        elif kind == "tls":
            listeners.append(
                ir.Listener(
                    name=name,
                    address=address,
                    protocol="tls",
                    sni_routes=tuple(_sni_routes(c, b, number, servers)),
                )
            )
        elif kind == "tcp":
            listeners.append(
                ir.Listener(
                    name=name,
                    address=address,
                    protocol="tcp",
                    tcp_routes=tuple(_tcp_routes(c, b, number, servers)),
                    authz=enforce,
                )
            )
    return ir.Snapshot(
        version=opts.version,
        listeners=tuple(sorted(listeners, key=lambda x: x.name)),
        route_tables=tuple(sorted(tables, key=lambda x: x.name)),
        clusters=tuple(
            sorted({cl.name: cl for cl in reversed(clusters)}.values(), key=lambda cl: cl.name)
        ),
        # The gateway workload's AuthorizationPolicies (selected by its --labels), as Istio
        # applies them to ingress gateways; TLS passthrough listeners have none (no HTTP).
        authz=tuple(c.authz),
        authz_tcp=tuple(authz_tcp_form(p) for p in c.authz),
    )
