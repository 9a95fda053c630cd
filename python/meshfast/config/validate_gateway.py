"""Semantic checks of Gateways, VirtualService ``tls[]`` rules and gateway bindings.

Follows istiod's validation where it applies (hosts required, ``ns/dnsName`` host form, TLS
settings per mode, sniHosts within the VirtualService's hosts) and adds what meshfast cannot do
yet (TLS modes, versions and ports shared by servers that need different listeners).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from meshfast.config import gateway as g
from meshfast.config import hosts
from meshfast.config import resources as r
from meshfast.config import validate_http as vh
from meshfast.config.load import child
from meshfast.config.model import Problem
from meshfast.config.registry import ip_literal
from meshfast.config.unsupported import Unsupported

if TYPE_CHECKING:
    from meshfast.config.load import Document

Issue = tuple[str, str]  # (JSON path, message)

_NOT_YET_MODES = frozenset({"AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"})
_VERSION_ORDER = {"TLSV1_0": 0, "TLSV1_1": 1, "TLSV1_2": 2, "TLSV1_3": 3}


def _server_host(host: str, path: str) -> Iterator[Issue]:
    ns, slash, name = host.strip().partition("/")
    if slash and (not ns or not name or "/" in name):
        yield path, f'"{host}" must be dnsName or namespace/dnsName'
    elif not (name if slash else ns):
        yield path, "host must not be empty"


def _tls(server: g.Server, sp: str) -> Iterator[Issue]:
    tls = server.tls
    protocol = server.port.protocol.upper()
    tp = child(sp, "tls")
    if tls is None:
        if protocol == "HTTPS":
            yield sp, "an HTTPS server needs tls settings"
        return
    mode = g.tls_mode(server)
    if protocol in g.HTTP_PROTOCOLS:
        if tls.mode is not None:
            yield child(tp, "mode"), f"tls.mode applies to HTTPS and TLS servers, not {protocol}"
        return
    if protocol in g.TCP_PROTOCOLS:
        yield tp, f"tls applies to HTTP, HTTPS and TLS servers, not {protocol}"
        return
    if protocol not in ("HTTPS", "TLS"):
        return
    if mode in _NOT_YET_MODES:
        yield child(tp, "mode"), Unsupported(f"tls.mode {mode} is not implemented yet")
        return
    if protocol == "TLS" and mode in ("SIMPLE", "MUTUAL"):
        yield (
            child(tp, "mode"),
            Unsupported(f"tls.mode {mode} on a TLS server is not implemented yet"),
        )
        return
    if mode in ("SIMPLE", "MUTUAL"):
        if not tls.server_certificate:
            yield tp, f"serverCertificate is required with tls.mode {mode}"
        if not tls.private_key:
            yield tp, f"privateKey is required with tls.mode {mode}"
        if mode == "MUTUAL" and not tls.ca_certificates:
            yield tp, "caCertificates is required with tls.mode MUTUAL"
    low, high = tls.min_protocol_version, tls.max_protocol_version
    if low in ("TLSV1_0", "TLSV1_1"):
        yield (
            child(tp, "minProtocolVersion"),
            Unsupported(f"minProtocolVersion {low} is not implemented yet (TLSV1_2 is the lowest)"),
        )
    if high not in (None, "TLS_AUTO", "TLSV1_3"):
        yield (
            child(tp, "maxProtocolVersion"),
            Unsupported(f"maxProtocolVersion {high} is not implemented yet"),
        )
    if (
        low in _VERSION_ORDER
        and high in _VERSION_ORDER
        and _VERSION_ORDER[low] > _VERSION_ORDER[high]
    ):
        yield child(tp, "minProtocolVersion"), f"minProtocolVersion {low} is above {high}"


def gateway(gw: r.Gateway) -> Iterator[Issue]:
    if not gw.spec.servers:
        yield "$.spec.servers", "at least one server is required"
    for i, server in enumerate(gw.spec.servers):
        sp = f"$.spec.servers[{i}]"
        protocol = server.port.protocol.upper()
        if protocol not in g.PROTOCOLS:
            known = ", ".join(sorted(g.PROTOCOLS))
            yield (
                f"{sp}.port.protocol",
                f'unknown protocol "{server.port.protocol}" (one of {known})',
            )
            continue
        if not server.hosts:
            yield f"{sp}.hosts", "at least one host is required"
        for j, h in enumerate(server.hosts):
            yield from _server_host(h, f"{sp}.hosts[{j}]")
        if server.bind is not None:
            if server.bind.startswith("unix://"):
                yield f"{sp}.bind", Unsupported("unix domain socket binds are not implemented yet")
            elif not ip_literal(server.bind.strip("[]")):
                yield f"{sp}.bind", f'"{server.bind}" is not an IP address'
        yield from _tls(server, sp)


# --- VirtualServices ----------------------------------------------------------------------


def _gateway_names(names: Iterable[str], path: str) -> Iterator[Issue]:
    for i, name in enumerate(names):
        n = name.strip()
        ns, slash, rest = n.partition("/")
        if not n or (slash and (not ns or not rest or "/" in rest)):
            yield child(path, i), f'"{name}" must be mesh, a Gateway name or namespace/name'


def virtual_service(vs: r.VirtualService) -> Iterator[Issue]:
    """Gateway names, per-match gateways and ``tls[]`` rules."""
    spec = vs.spec
    ns = vs.metadata.namespace
    yield from _gateway_names(spec.gateways, "$.spec.gateways")
    for i, http in enumerate(spec.http):
        for j, m in enumerate(http.match):
            yield from _gateway_names(m.gateways, f"$.spec.http[{i}].match[{j}].gateways")
    for i, tls in enumerate(spec.tls):
        for j, tm in enumerate(tls.match):
            yield from _gateway_names(tm.gateways, f"$.spec.tls[{i}].match[{j}].gateways")
    for i, tcp in enumerate(spec.tcp):
        for j, lm in enumerate(tcp.match):
            yield from _gateway_names(lm.gateways, f"$.spec.tcp[{i}].match[{j}].gateways")
    vs_hosts = [hosts.expand(h, ns) for h in spec.hosts if h.strip()]
    for i, rule in enumerate(spec.tls):
        tp = f"$.spec.tls[{i}]"
        if not rule.match:
            yield tp, "match is required"
        if not rule.route:
            yield tp, "route is required"
        yield from vh.weights(rule.route, f"{tp}.route")
        for j, tm in enumerate(rule.match):
            mp = f"{tp}.match[{j}].sniHosts"
            if not tm.sni_hosts:
                yield mp, "at least one sniHost is required"
            for k, sni in enumerate(tm.sni_hosts):
                if not sni.strip():
                    yield child(mp, k), "sniHost must not be empty"
                    continue
                full = hosts.expand(sni, ns)
                if vs_hosts and not any(g.host_within(full, h) for h in vs_hosts):
                    yield child(mp, k), f'sniHost "{sni}" is not within the VirtualService hosts'


# --- across Gateways ----------------------------------------------------------------------


def _tls_key(server: g.Server) -> tuple[object, ...]:
    t = server.tls
    assert t is not None
    ca = t.ca_certificates if t.mode == "MUTUAL" else None
    return (t.mode, t.server_certificate, t.private_key, ca, t.min_protocol_version)


def port_conflicts(
    gateways: Iterable[tuple[Document, r.Gateway]],
) -> Iterator[Problem]:
    """Servers (of any Gateways) on one port that would need different listeners."""
    first: dict[int, tuple[r.Gateway, int, g.Server]] = {}
    for doc, gw in gateways:
        for i, server in enumerate(gw.spec.servers):
            kind = g.server_kind(server)
            if server.port.protocol.upper() not in g.PROTOCOLS or kind == "unsupported":
                continue
            number = server.port.number
            seen = first.setdefault(number, (gw, i, server))
            if seen[2] is server:
                continue
            other_gw, j, other = seen
            where = f"{other_gw.metadata.namespace}/{other_gw.metadata.name} servers[{j}]"
            sp = f"$.spec.servers[{i}]"
            # Terminated and passed-through TLS on one port, or servers on other bind
            # addresses, are valid Istio (its listener splits them by SNI, or they are two
            # listeners); meshfast serves one kind of server per port and bind for now.
            # Plaintext kinds on one port cannot be told apart, by Istio either.
            path, message = "", ""
            other_kind = g.server_kind(other)
            if kind != other_kind and {kind, other_kind} <= {"https", "tls"}:
                path = f"{sp}.port.protocol"
                message = Unsupported(
                    f"port {number}: {server.port.protocol} ({kind}) beside"
                    f" {other.port.protocol} ({other_kind}) of {where} on one port"
                    " is not implemented yet"
                )
            elif kind != other_kind:
                path = f"{sp}.port.protocol"
                message = (
                    f"port {number}: {server.port.protocol} ({kind}) conflicts with "
                    f"{other.port.protocol} ({other_kind}) of {where}"
                )
            elif (server.bind or "") != (other.bind or ""):
                path = f"{sp}.bind"
                message = Unsupported(
                    f"port {number}: bind {server.bind or '-'} beside"
                    f" {other.bind or '-'} of {where} on one port is not implemented yet"
                )
            elif kind == "https" and _tls_key(server) != _tls_key(other):
                path = f"{sp}.tls"
                message = Unsupported(
                    f"port {number}: HTTPS servers with TLS settings different from {where}"
                    " are not implemented yet"
                )
            if message:
                yield Problem(
                    doc.file,
                    doc.line_of(path),
                    "Gateway",
                    gw.metadata.name,
                    path,
                    message,
                )
