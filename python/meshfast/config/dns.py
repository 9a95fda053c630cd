"""DNS endpoints resolved by the control plane (pure: no resolver call here).

A ServiceEntry with ``resolution: DNS`` or ``DNS_ROUND_ROBIN`` has endpoints that are hostnames
(``endpoints[].address``, or each of its ``hosts`` when it has no endpoints).  The compiler
leaves them in the snapshot as ``host:port``; the control layer
(:mod:`meshfast.control.resolver`) resolves the names and :func:`substitute` turns each such
endpoint into addresses before the core sees the snapshot, so no connection waits on DNS:

* ``DNS`` (Envoy STRICT_DNS): one endpoint per resolved address, IPv4 and IPv6
  (``[v6]:port``), each keeping the endpoint's weight, labels and locality.  A name that
  resolves to N addresses therefore weighs N times its weight, as in Envoy.
* ``DNS_ROUND_ROBIN`` (Envoy LOGICAL_DNS): only the first resolved address.
* A name without addresses (never resolved, or resolution failed before any success) keeps its
  ``host:port`` endpoint: the core then resolves it when it connects, as before.

Endpoints that are already IP addresses are left alone, and so is every cluster that does not
belong to a DNS ServiceEntry (``outbound|PORT|SUBSET|FQDN`` names the service).

Change detection (:func:`merge_addresses`): a name's addresses change only when the *set*
changes; a new answer with the same set keeps the previous order, so round-robin DNS servers
that rotate their answers do not cause a push (and ``DNS_ROUND_ROBIN`` keeps its address).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import msgspec

from meshfast.config import ir
from meshfast.config.hosts import ip_literal, join_host_port

if TYPE_CHECKING:
    from meshfast.config.model import Config

Mode = Literal["DNS", "DNS_ROUND_ROBIN"]
DnsPlan = Mapping[str, Mode]
"""The resolution of each DNS ServiceEntry host, by FQDN."""

Addresses = Mapping[str, Sequence[str]]
"""Resolved IP addresses by hostname (lower case), in resolver order."""


def plan(config: Config) -> dict[str, Mode]:
    """Which services (by FQDN) are DNS ServiceEntry hosts, and how they resolve."""
    # Imported here: a sidecar that never loads a config (a cached snapshot) never pays
    # for the resource types.
    from meshfast.config import resources as r
    from meshfast.config.registry import build_registry, by_kind

    entries = {
        (se.metadata.namespace, se.metadata.name): se
        for se in by_kind(config.resources, r.ServiceEntry)
    }
    out: dict[str, Mode] = {}
    for fqdn, svc in build_registry(config.resources).items():
        kind, ns, name = svc.origin
        se = entries.get((ns, name)) if kind == "ServiceEntry" else None
        if se is None:
            continue
        resolution = se.spec.resolution
        if resolution == "DNS" or resolution == "DNS_ROUND_ROBIN":
            out[fqdn] = resolution
    return out


def split_host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` → (host without brackets, port); None if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def hostname(address: str) -> str | None:
    """The hostname of a ``host:port`` endpoint, or None when it is an IP address."""
    parts = split_host_port(address)
    if parts is None or not parts[0] or ip_literal(parts[0]):
        return None
    return parts[0].lower()


def cluster_mode(name: str, dns: DnsPlan) -> Mode | None:
    """The resolution of an ``outbound|PORT|SUBSET|FQDN`` cluster, if it is a DNS one."""
    parts = name.split("|", 3)
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    return dns.get(parts[3])


def _dns_clusters(snapshot: ir.Snapshot, dns: DnsPlan) -> Iterator[tuple[ir.Cluster, Mode]]:
    for cluster in snapshot.clusters:
        mode = cluster_mode(cluster.name, dns)
        if mode is not None:
            yield cluster, mode


def hostnames(snapshot: ir.Snapshot, dns: DnsPlan) -> set[str]:
    """Every hostname the snapshot's DNS clusters need resolved."""
    return {
        name
        for cluster, _ in _dns_clusters(snapshot, dns)
        for ep in cluster.endpoints
        if (name := hostname(ep.address)) is not None
    }


def _expand(ep: ir.Endpoint, mode: Mode, addresses: Addresses) -> list[ir.Endpoint]:
    name = hostname(ep.address)
    found = addresses.get(name) if name is not None else None
    parts = split_host_port(ep.address)
    if not found or parts is None:
        return [ep]
    chosen = list(found[:1]) if mode == "DNS_ROUND_ROBIN" else list(dict.fromkeys(found))
    return [
        msgspec.structs.replace(ep, address=join_host_port(ip, parts[1]), labels=dict(ep.labels))
        for ip in chosen
    ]


def substitute(snapshot: ir.Snapshot, dns: DnsPlan, addresses: Addresses) -> ir.Snapshot:
    """``snapshot`` with the hostname endpoints of DNS clusters replaced by their addresses.

    The version is kept; endpoints stay sorted by address as the compiler sorts them.
    """
    if not dns:
        return snapshot
    changed = False
    clusters = []
    for cluster in snapshot.clusters:
        mode = cluster_mode(cluster.name, dns)
        if mode is None or not any(hostname(ep.address) for ep in cluster.endpoints):
            clusters.append(cluster)
            continue
        endpoints = [new for ep in cluster.endpoints for new in _expand(ep, mode, addresses)]
        endpoints.sort(key=lambda e: (e.address, e.weight, sorted(e.labels.items())))
        clusters.append(msgspec.structs.replace(cluster, endpoints=tuple(endpoints)))
        changed = True
    if not changed:
        return snapshot
    return msgspec.structs.replace(snapshot, clusters=tuple(clusters))


def merge_addresses(old: Sequence[str] | None, new: Sequence[str]) -> tuple[str, ...]:
    """The addresses to keep for a name: ``old`` if ``new`` is the same set, else ``new``."""
    fresh = tuple(dict.fromkeys(new))
    if old is not None and set(old) == set(fresh):
        return tuple(old)
    return fresh
