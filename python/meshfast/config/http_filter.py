"""``HttpFilter`` resources → ``ir.FilterRef`` on the routes they apply to.

Ids are stable for a given config: the filters sorted by (namespace, name), numbered from 0
(:func:`numbered`; the control layer's dispatcher uses the same numbering).  A route gets the
filters, in id order, whose ``hosts`` match its virtual host (expanded like VirtualService
hosts; none or ``*``: every virtual host, including inbound ones) and whose ``route``, when
given, is the route's name.

Building the filter a resource names (importing ``module:Class``) is not done here: the
config pipeline never imports the filter machinery.  Whoever loads a config and wants the
filters built passes a :class:`FilterLoader` to ``load_config`` (the deploy path passes
``meshfast.filters.registry.load_resource``), and the validator places what it reports at
its file and line like any other problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import msgspec

from meshfast.config import duration, ir
from meshfast.config import resources as r
from meshfast.config.registry import RegistryService, by_kind, resolve, wildcard_match

DEFAULT_FILTER_TIMEOUT_MS = 1000
MAX_FILTER_TIMEOUT_MS = 600_000

# (JSON path, message): a problem as the validator's checks report it.
Issue = tuple[str, str]

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_TARGET = re.compile(rf"^({_DOTTED}):({_DOTTED})$")


class FilterLoader(Protocol):
    """Builds the filter instance an ``HttpFilter`` resource read from ``source`` names.

    Returns the instance, or None and the problems as ``(JSON path, message)`` pairs
    (``$.spec.python``, ``$.spec.config.rate``...), which the validator reports at their
    line in ``source``."""

    def __call__(self, resource: r.HttpFilter, source: str, /) -> tuple[Any, list[Issue]]: ...


def parse_target(text: str) -> tuple[str, str] | None:
    """``"pkg.module:Class"`` → ``("pkg.module", "Class")``; None when malformed.  Here, not
    in the filter registry, so that validation checks the syntax without importing it."""
    m = _TARGET.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


def numbered(resources: Iterable[r.Resource]) -> list[tuple[int, r.HttpFilter]]:
    """Every HttpFilter with its id."""
    return list(enumerate(by_kind(resources, r.HttpFilter)))


def ref_name(f: r.HttpFilter) -> str:
    """``namespace/name``: how stats, errors and logs name a filter."""
    return f"{f.metadata.namespace}/{f.metadata.name}"


def timeout_ms(f: r.HttpFilter) -> int:
    """The filter's time budget per phase (validated: whole ms, at most 10 minutes)."""
    if f.spec.timeout is None:
        return DEFAULT_FILTER_TIMEOUT_MS
    return max(1, round(duration.parse_ms(f.spec.timeout)))


def _body_limits(instance: Any) -> tuple[int, int]:
    """What the filter's class declares it reads of the bodies (registry.load checked it)."""
    if instance is None:
        return 0, 0
    return int(instance.request_body_limit), int(instance.response_body_limit)


def _vhost_host(vh: ir.VirtualHost) -> str | None:
    """The host of a ``host:port`` virtual host (None for inbound ones)."""
    host, sep, port = vh.name.rpartition(":")
    return host if sep and port.isdigit() else None


def _host_matches(patterns: tuple[str, ...], host: str | None) -> bool:
    if not patterns or "*" in patterns:
        return True
    if host is None:
        return False
    return any(p == host or wildcard_match(p, host) for p in patterns)


def attach(
    snapshot: ir.Snapshot,
    resources: Iterable[r.Resource],
    registry: dict[str, RegistryService],
    instances: Mapping[tuple[str, str], Any] | None = None,
) -> ir.Snapshot:
    """``snapshot`` with the filters of ``resources`` attached to its routes; the body limits
    come from the filter ``instances`` (by namespace and name) the config loaded."""
    loaded = instances or {}
    filters = []
    for i, f in numbered(resources):
        request_limit, response_limit = _body_limits(
            loaded.get((f.metadata.namespace, f.metadata.name))
        )
        ref = ir.FilterRef(
            id=i,
            name=ref_name(f),
            failure_status=f.spec.failure_status,
            timeout_ms=timeout_ms(f),
            request_body_limit=request_limit,
            response_body_limit=response_limit,
        )
        hosts = tuple(resolve(h, f.metadata.namespace, registry) for h in f.spec.hosts)
        filters.append((ref, hosts, f.spec.route))
    if not filters:
        return snapshot
    tables = []
    for table in snapshot.route_tables:
        vhosts = []
        for vh in table.virtual_hosts:
            host = _vhost_host(vh)
            here = [(ref, route) for ref, pats, route in filters if _host_matches(pats, host)]
            routes = []
            for rt in vh.routes:
                refs = tuple(ref for ref, name in here if name is None or name == rt.name)
                if refs:
                    action = msgspec.structs.replace(rt.action, filters=rt.action.filters + refs)
                    rt = msgspec.structs.replace(rt, action=action)
                routes.append(rt)
            vhosts.append(msgspec.structs.replace(vh, routes=tuple(routes)))
        tables.append(msgspec.structs.replace(table, virtual_hosts=tuple(vhosts)))
    return msgspec.structs.replace(snapshot, route_tables=tuple(tables))
