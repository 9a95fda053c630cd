"""meshfast's compiled IR → an HAProxy config, where HAProxy's simple routing can say it.

HAProxy is the benchmark's optional third peer: a lean proxy that shows how low the CPU per
request can go. Only what maps one to one is translated: virtual hosts with exact domains
(matched on the whole ``Host``, as meshfast does) whose routes are a single catch-all to a
single cluster, plus a ``*`` domain as the default backend. Anything else (path or header
conditions, weighted splits, wildcard domains, TCP or TLS passthrough listeners, TLS
termination, many routes) raises :class:`Unsupported` with the reason, and the harness skips
HAProxy for that scenario, saying why.

Settings matched to the others: ``nbthread`` = the worker count, no logging, keep-alive both
ways, connect timeout from the cluster, ``retries`` = the route's retry attempts (HAProxy
retries connection failures only; 0 without a policy), the route timeout as ``timeout
server`` (an inactivity timeout: the nearest HAProxy has), and otherwise client/server
timeouts long enough never to fire during a run.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshfast.bench.envoy_export import unhandled_fields
from meshfast.config import ir

__all__ = ["MAXCONN", "Unsupported", "haproxy_config"]

# HAProxy wants about 2 x maxconn file descriptors; the hard limit here is 20,000.
MAXCONN = 4096

_BALANCE = {
    "ROUND_ROBIN": "roundrobin",
    "LEAST_REQUEST": "leastconn",
    "RANDOM": "random",
    "PEAK_EWMA": "leastconn",  # HAProxy has no latency-aware balancing
}


class Unsupported(ValueError):
    """This IR needs routing that the generated HAProxy config does not express."""


def _catch_all(m: ir.RouteMatch) -> bool:
    path_all = m.path is None or (m.path.kind == "prefix" and m.path.value == "/")
    return path_all and not (m.method or m.authority or m.scheme or m.headers or m.query_params)


def _backend_name(index: int) -> str:
    return f"b{index}"


def haproxy_config(
    snapshot: ir.Snapshot,
    *,
    bind: str,
    h2_bind: str | None = None,
    workers: int = 1,
) -> str:
    """An ``haproxy.cfg`` serving the snapshot's outbound HTTP listener.

    ``bind`` takes HTTP/1.1; ``h2_bind`` (optional) takes h2c with prior knowledge (HAProxy
    speaks one or the other on a bind, where meshfast and Envoy detect).
    """
    http = [x for x in snapshot.listeners if x.protocol == "http"]
    if len(http) != 1 or len(http) != len(snapshot.listeners):
        raise Unsupported(
            "only one HTTP listener (and no TCP or TLS passthrough listener) is translated"
        )
    if http[0].tls is not None:
        raise Unsupported(f"listener {http[0].name} terminates TLS: not translated to HAProxy")
    tables = {t.name: t for t in snapshot.route_tables}
    table = tables.get(http[0].route_table or "")
    if table is None:
        raise Unsupported("the HTTP listener has no route table")
    clusters = {c.name: c for c in snapshot.clusters}

    used: dict[str, int] = {}  # cluster name → backend index
    policies: dict[int, tuple[int, int]] = {}  # backend index → (timeout ms, retries)
    rules: list[tuple[Sequence[str], int]] = []
    default: int | None = None
    for vh in table.virtual_hosts:
        if len(vh.routes) != 1 or not _catch_all(vh.routes[0].match_):
            raise Unsupported(
                f"virtual host {vh.name} has {len(vh.routes)} route(s) with conditions;"
                " the HAProxy config translates only Host → backend"
            )
        action = vh.routes[0].action
        extra = unhandled_fields(action, ("clusters", "timeout_ms", "retry"))
        if extra:
            raise Unsupported(f"virtual host {vh.name}: {', '.join(extra)} not translated")
        targets = [c for c in action.clusters if c.weight > 0]
        if any(unhandled_fields(c, ("cluster", "weight")) for c in targets):
            raise Unsupported(f"virtual host {vh.name}: destination header operations")
        if len(targets) != 1:
            raise Unsupported(f"virtual host {vh.name}: weighted splits are not translated")
        name = targets[0].cluster
        if name not in clusters:
            raise Unsupported(f"virtual host {vh.name}: cluster {name} is not defined")
        # Outlier detection and connection limits have HAProxy counterparts (observe/
        # error-limit, maxconn/maxqueue) whose semantics differ: refused, not approximated.
        extra = unhandled_fields(
            clusters[name], ("name", "lb", "protocol", "connect_timeout_ms", "endpoints")
        )
        if extra:
            raise Unsupported(f"cluster {name}: {', '.join(extra)} not translated")
        index = used.setdefault(name, len(used))
        policy = (action.timeout_ms, action.retry.attempts if action.retry else 0)
        if policies.setdefault(index, policy) != policy:
            raise Unsupported(f"cluster {name}: routes with different timeouts or retries")
        exact = [d for d in vh.domains if "*" not in d]
        if len(exact) != len(vh.domains) and vh.domains != ("*",):
            raise Unsupported(f"virtual host {vh.name}: wildcard domains are not translated")
        if vh.domains == ("*",):
            default = index if default is None else default
        else:
            rules.append((exact, index))

    lines = [
        "# Generated by meshfast bench from the compiled IR (Host -> backend only).",
        "global",
        f"    nbthread {workers}",
        f"    maxconn {MAXCONN}",
        "",
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        "    timeout connect 10s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-keep-alive 120s",
        "",
        "frontend outbound",
        f"    bind {bind}",
    ]
    if h2_bind is not None:
        lines.append(f"    bind {h2_bind} proto h2")
    for i, (domains, index) in enumerate(rules):
        lines.append(f"    acl vh{i} req.hdr(host) -i {' '.join(domains)}")
        lines.append(f"    use_backend {_backend_name(index)} if vh{i}")
    if default is not None:
        lines.append(f"    default_backend {_backend_name(default)}")
    for name, index in used.items():
        cluster = clusters[name]
        lines += [
            "",
            f"backend {_backend_name(index)}  # {name}",
            f"    balance {_BALANCE[cluster.lb]}",
            f"    timeout connect {max(1, cluster.connect_timeout_ms)}ms",
        ]
        timeout_ms, retries = policies[index]
        if timeout_ms:
            lines.append(f"    timeout server {timeout_ms}ms")
        # HAProxy retries connection failures (3 times by default): as many as the route's
        # policy allows (0 without one), on another server when there is one.
        lines.append(f"    retries {retries}")
        if retries and len(cluster.endpoints) > 1:
            lines.append("    option redispatch")
        proto = " proto h2" if cluster.protocol == "http2" else ""
        if cluster.protocol == "tcp":
            raise Unsupported(f"cluster {name} is TCP")
        for j, ep in enumerate(cluster.endpoints):
            weight = min(256, max(1, ep.weight))  # HAProxy's range is 1..256
            lines.append(f"    server s{j} {ep.address} weight {weight}{proto}")
    return "\n".join(lines) + "\n"
