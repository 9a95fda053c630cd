"""Kubernetes host naming: short names, namespace-qualified names and virtual-host domains.

In namespace ``ns`` the host ``reviews`` means ``reviews.ns.svc.cluster.local``; ``reviews.ns``
and ``reviews.ns.svc`` mean the same.  Anything else with dots (``www.googleapis.com``) and
wildcards (``*.example.com``, ``*``) are kept as written.  Everything is lowercased.
"""

from __future__ import annotations

import ipaddress

SUFFIX = "svc.cluster.local"


def expand(host: str, namespace: str) -> str:
    """The fully qualified form of ``host`` as written in namespace ``namespace``."""
    host = host.strip().lower()
    if not host or host.startswith("*"):
        return host
    labels = host.split(".")
    if len(labels) == 1:
        return f"{host}.{namespace.lower()}.{SUFFIX}"
    if len(labels) == 2:
        return f"{host}.{SUFFIX}"
    if len(labels) == 3 and labels[2] == "svc":
        return f"{host}.cluster.local"
    return host


def is_cluster_local(fqdn: str) -> bool:
    """``name.ns.svc.cluster.local`` (exactly five labels, no wildcard)."""
    labels = fqdn.split(".")
    return len(labels) == 5 and ".".join(labels[2:]) == SUFFIX and "*" not in labels[0]


def domains(fqdn: str, port: int, *, default_port: bool) -> list[str]:
    """The Host/``:authority`` values that reach ``fqdn`` on ``port``.

    ``reviews.default.svc.cluster.local`` port 9080 gives ``reviews:9080``,
    ``reviews.default:9080``, ``reviews.default.svc:9080``, the full name with ``:9080`` and,
    with ``default_port``, the same four without a port.  Other hosts give ``host:port`` and
    (``default_port``) ``host``.
    """
    fqdn = fqdn.lower()
    if fqdn == "*":
        return ["*"]
    if is_cluster_local(fqdn):
        name, ns = fqdn.split(".")[:2]
        names = [name, f"{name}.{ns}", f"{name}.{ns}.svc", fqdn]
    else:
        names = [fqdn]
    out = [f"{n}:{port}" for n in names]
    if default_port:
        out.extend(names)
    return out


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
