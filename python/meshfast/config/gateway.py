"""The Istio ``Gateway`` kind, and which VirtualServices bind to which gateway.

The Structs mirror ``networking.istio.io`` ``Gateway`` (``GatewaySpec`` is wrapped in the
top-level ``Gateway`` of :mod:`meshfast.config.resources`).  ``selector`` is accepted and
ignored: in ``meshfast run --gateway`` every Gateway given applies.

Binding (``VirtualService.gateways``): an entry is ``mesh`` (every sidecar), ``ns/name`` or a
short ``name`` (a Gateway in the VirtualService's own namespace).  An empty list means
``[mesh]``.  ``http[].match[].gateways``, when set, replaces the list for that match.

Server hosts are ``[ns/]dnsName``: ``ns`` is ``*`` (any namespace, the default), ``.`` (the
Gateway's namespace) or a namespace; it filters which VirtualServices may bind.  A
VirtualService host and a server host *intersect* when one covers the other (``*``,
``*.suffix`` or equal names); the intersection is the narrower of the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from meshfast.config import hosts
from meshfast.config.structs import IstioStruct, Port

TlsMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]
TlsVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]

MESH = "mesh"

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})
PROTOCOLS = HTTP_PROTOCOLS | TCP_PROTOCOLS | {"HTTPS", "TLS"}


class GatewayPort(IstioStruct, frozen=True):
    number: Port
    protocol: str
    name: str
    target_port: Port | None = None  # deprecated; ignored


class ServerTLSSettings(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset(
        {
            "credentialName",
            "credentialNames",
            "tlsCertificates",
            "caCertCredentialName",
            "subjectAltNames",
            "verifyCertificateSpki",
            "verifyCertificateHash",
            "cipherSuites",
            "insecureSkipVerify",
            "caCrl",
        }
    )

    https_redirect: bool = False
    mode: TlsMode | None = None  # unset: PASSTHROUGH
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    min_protocol_version: TlsVersion | None = None
    max_protocol_version: TlsVersion | None = None


class Server(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"defaultEndpoint"})

    port: GatewayPort
    hosts: tuple[str, ...] = ()
    bind: str | None = None
    tls: ServerTLSSettings | None = None
    name: str | None = None


class GatewaySpec(IstioStruct, frozen=True):
    servers: tuple[Server, ...] = ()
    selector: dict[str, str] = {}


# --- what a server does ------------------------------------------------------------------

ServerKind = Literal["http", "https", "tls", "tcp", "unsupported"]


def tls_mode(server: Server) -> TlsMode | None:
    """The effective ``tls.mode``: None without a ``tls`` block, PASSTHROUGH when unset."""
    if server.tls is None:
        return None
    return server.tls.mode or "PASSTHROUGH"


def server_kind(server: Server) -> ServerKind:
    """The listener a server needs: http, https (terminated), tls (passthrough) or tcp."""
    protocol = server.port.protocol.upper()
    mode = tls_mode(server)
    if protocol in HTTP_PROTOCOLS:
        return "http"
    if protocol in TCP_PROTOCOLS:
        return "tcp"
    if protocol == "HTTPS":
        if mode in ("SIMPLE", "MUTUAL"):
            return "https"
        return "tls" if mode == "PASSTHROUGH" else "unsupported"
    if protocol == "TLS":
        if mode is None:
            return "tcp"
        return "tls" if mode == "PASSTHROUGH" else "unsupported"
    return "unsupported"


# --- binding ------------------------------------------------------------------------------


def gateway_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def bound_gateways(entries: Iterable[str], vs_namespace: str) -> frozenset[str]:
    """``mesh`` and ``ns/name`` keys of a ``gateways`` list (empty: ``{mesh}``)."""
    out: set[str] = set()
    for entry in entries:
        e = entry.strip()
        if e == MESH:
            out.add(MESH)
        elif "/" in e:
            out.add(e)
        else:
            out.add(gateway_key(vs_namespace, e))
    return frozenset(out) if out else frozenset({MESH})


def split_server_host(host: str, gateway_namespace: str) -> tuple[str, str]:
    """``(namespace or "*", dnsName)`` of a server host; ``.`` becomes the Gateway's namespace."""
    ns, slash, name = host.strip().partition("/")
    if not slash:
        return "*", ns.lower()
    if ns == ".":
        ns = gateway_namespace
    return ns, name.lower()


def _covers(pattern: str, name: str) -> bool:
    """Whether every name ``name`` matches is also matched by ``pattern``."""
    if pattern == "*" or pattern == name:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return name.endswith(suffix) and len(name) > len(suffix)
    return False


def intersect(a: str, b: str) -> str | None:
    """The narrower of two host patterns when one covers the other, else None."""
    a, b = a.lower(), b.lower()
    if _covers(a, b):
        return b
    if _covers(b, a):
        return a
    return None


def host_within(name: str, pattern: str) -> bool:
    """``name`` (a host or wildcard) falls inside ``pattern`` (``*``, ``*.suffix`` or equal)."""
    return _covers(pattern.lower(), name.lower())


def server_host_matches(
    vs_host: str, vs_namespace: str, server_host: str, gateway_namespace: str
) -> str | None:
    """The intersection of a VirtualService host with one server host, namespace permitting."""
    ns, name = split_server_host(server_host, gateway_namespace)
    if ns not in ("*", vs_namespace):
        return None
    return intersect(vs_host, name)


def expand_host(host: str, namespace: str) -> str:
    """A VirtualService or SNI host as an FQDN, without a registry (for validation)."""
    return hosts.expand(host, namespace)
