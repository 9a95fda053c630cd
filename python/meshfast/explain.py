"""``meshfast explain``: what the sidecar does with one request, and why.

The route is the data plane's own answer (``_core.explain_route``: the workers' route table,
host lookup and path normalization, with the first condition each earlier route fails), so
what is explained is what is served.  Around it, from the compiled IR: the VirtualService
rule behind the route, the destination clusters (subset, port, weight), their balancing,
timeouts, retries, fault, mirrors, TLS and connection-pool limits, and the endpoints —
with their live health, breaker and load when asked of a running sidecar (``--admin``).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec

from meshfast.config import ir
from meshfast.config import resources as r
from meshfast.config.model import Config

UNLIMITED = ir.UNLIMITED


@dataclass(frozen=True)
class Request:
    """``GET http://reviews:9080/path?q``, with headers."""

    method: str
    scheme: str
    authority: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, line: str, headers: list[str]) -> Request:
        """``METHOD URL`` (the method may be left out: GET) and ``Name: value`` headers;
        ValueError naming what is wrong."""
        method, _, url = line.strip().rpartition(" ")
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.netloc:
            raise ValueError(f"--request {line!r}: no host in {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pairs = []
        for h in headers:
            name, sep, value = h.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"-H {h!r}: expected 'Name: value'")
            pairs.append((name.strip().lower(), value.strip()))
        host = next((v for n, v in pairs if n == "host"), parts.netloc)
        return cls(
            method=(method.strip() or "GET").upper(),
            scheme=parts.scheme,
            authority=host.lower(),
            target=target,
            headers=tuple(pairs),
        )


@dataclass
class Explanation:
    request: Request
    listener: str
    path: str
    virtual_host: str | None
    tried: list[dict[str, Any]]
    route: dict[str, Any] | None = None
    origin: str | None = None  # "VirtualService ns/name http[i]"
    clusters: list[dict[str, Any]] = field(default_factory=list)
    live: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {
            "request": msgspec.to_builtins(self.request.__dict__),
            "listener": self.listener,
            "path": self.path,
            "virtual_host": self.virtual_host,
            "skipped": [t for t in self.tried if t["miss"] is not None],
            "route": self.route,
            "origin": self.origin,
            "clusters": self.clusters,
            "live": self.live,
        }
        return out


def explain(
    snapshot: ir.Snapshot,
    request: Request,
    *,
    listener: str | None = None,
    config: Config | None = None,
    live_clusters: dict[str, Any] | None = None,
) -> Explanation:
    """What ``snapshot`` does with ``request`` on ``listener`` (default: the outbound one,
    else the first HTTP listener).  ``config``: the resources it was compiled from (to name
    the VirtualService rule); ``live_clusters``: a running sidecar's ``/clusters``."""
    from meshfast import _core

    name = listener or _default_listener(snapshot)
    found = _core.explain_route(
        ir.encode(snapshot),
        name,
        method=request.method,
        scheme=request.scheme,
        authority=request.authority,
        target=request.target,
        headers=list(request.headers),
    )
    out = Explanation(
        request=request,
        listener=name,
        path=found["path"],
        virtual_host=found["virtual_host"],
        tried=list(found["routes"]),
        live=live_clusters is not None,
    )
    if found["matched"] is None:
        return out
    route = _route(snapshot, name, found["virtual_host"], found["matched"])
    out.route = _describe_route(route)
    out.origin = _origin(route.name, config) if config is not None else None
    clusters = {c.name: c for c in snapshot.clusters}
    live = {c["name"]: c for c in (live_clusters or {}).get("clusters", [])}
    for wc in route.action.clusters:
        out.clusters.append(_describe_cluster(wc, clusters.get(wc.cluster), live.get(wc.cluster)))
    return out


def _default_listener(snapshot: ir.Snapshot) -> str:
    http = [lst for lst in snapshot.listeners if lst.route_table is not None]
    for lst in http:
        if lst.name == "outbound":
            return lst.name
    if not http:
        raise ValueError("the config has no HTTP listener")
    return http[0].name


def _route(snapshot: ir.Snapshot, listener: str, vhost: str, index: int) -> ir.Route:
    table_name = next(lst.route_table for lst in snapshot.listeners if lst.name == listener)
    table = next(t for t in snapshot.route_tables if t.name == table_name)
    vh = next(v for v in table.virtual_hosts if v.name == vhost)
    return vh.routes[index]


def _origin(route_name: str, config: Config) -> str | None:
    """The VirtualService rule a route was compiled from: ``name.i`` or the rule's name."""
    for res in config.resources:
        if not isinstance(res, r.VirtualService):
            continue
        for i, http in enumerate(res.spec.http):
            if (http.name or f"{res.metadata.name}.{i}") == route_name:
                return f"VirtualService {res.metadata.namespace}/{res.metadata.name} http[{i}]"
    return None


def _ms(ms: int) -> str:
    if ms == 0:
        return "none"
    return f"{ms / 1000:g}s" if ms % 1000 == 0 else f"{ms}ms"


def _describe_route(route: ir.Route) -> dict[str, Any]:
    a = route.action
    out: dict[str, Any] = {"name": route.name, "timeout": _ms(a.timeout_ms)}
    if a.redirect is not None:
        out["redirect"] = msgspec.to_builtins(a.redirect)
    if a.direct_response is not None:
        out["direct_response"] = a.direct_response.status
    if a.rewrite is not None:
        out["rewrite"] = msgspec.to_builtins(a.rewrite)
    if a.retry is not None:
        rp = a.retry
        out["retries"] = {
            "attempts": rp.attempts,
            "per_try_timeout": _ms(rp.per_try_timeout_ms),
            "retry_on": list(rp.retry_on),
        }
    if a.fault is not None:
        f = a.fault
        fault: dict[str, Any] = {}
        if f.delay_millionths:
            fault["delay"] = f"{_ms(f.delay_ms)} for {f.delay_millionths / 10_000:g}%"
        if f.abort_millionths:
            code = f.abort_http_status or f"grpc {f.abort_grpc_status}"
            fault["abort"] = f"{code} for {f.abort_millionths / 10_000:g}%"
        out["fault"] = fault
    if a.mirrors:
        out["mirrors"] = [f"{m.cluster} ({m.millionths / 10_000:g}%)" for m in a.mirrors]
    if a.filters:
        out["filters"] = [msgspec.to_builtins(f) for f in a.filters]
    return out


def _cluster_name_parts(name: str) -> dict[str, Any]:
    """``outbound|9080|v2|reviews.default.svc.cluster.local`` → host, port, subset."""
    parts = name.split("|")
    if len(parts) != 4:
        return {}
    _, port, subset, host = parts
    return {"host": host, "port": int(port) if port.isdigit() else port, "subset": subset or None}


def _describe_cluster(
    wc: ir.WeightedCluster, c: ir.Cluster | None, live: dict[str, Any] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"cluster": wc.cluster, "weight": wc.weight}
    out.update(_cluster_name_parts(wc.cluster))
    if c is None:
        out["missing"] = True  # a route to a cluster the config does not define: 503 UH
        return out
    out["balancing"] = (
        f"consistent hash on {c.hash.source} {c.hash.name}".strip() if c.hash else c.lb
    )
    out["protocol"] = c.protocol
    out["connect_timeout"] = _ms(c.connect_timeout_ms)
    out["tls"] = _tls(c.tls)
    if c.limits is not None:
        out["limits"] = {k: v for k, v in msgspec.to_builtins(c.limits).items() if v != UNLIMITED}
    if c.outlier is not None:
        out["outlier_detection"] = msgspec.to_builtins(c.outlier)
    if c.failure_rate is not None:
        out["failure_rate_breaker"] = msgspec.to_builtins(c.failure_rate)
    if c.original_dst:
        out["original_destination"] = True
    states = {e["address"]: e for e in (live or {}).get("endpoints", [])}
    endpoints = []
    for e in c.endpoints:
        ep: dict[str, Any] = {"address": e.address, "weight": e.weight}
        if e.locality:
            ep["locality"] = e.locality
        state = states.get(e.address)
        if state is not None:
            ep["health"] = state.get("health")
            ep["rq_active"] = state.get("rq_active")
            for key in ("breaker", "ewma_ms"):
                if key in state:
                    ep[key] = state[key]
        endpoints.append(ep)
    out["endpoints"] = endpoints
    return out


def _tls(t: ir.UpstreamTls | None) -> str:
    if t is None:
        return "plaintext"
    if t.istio_mutual:
        return "ISTIO_MUTUAL"
    return "MUTUAL" if t.client_cert else "SIMPLE"


# --- rendering ----------------------------------------------------------------------------


def render(e: Explanation) -> str:
    """Plain text, one fact per line."""
    q = e.request
    lines = [f"request   {q.method} {q.scheme}://{q.authority}{q.target}"]
    lines.append(f"listener  {e.listener}, path as routed {e.path}")
    if e.virtual_host is None:
        lines.append(f"no route: no virtual host serves {q.authority} (404 NR)")
        return "\n".join(lines) + "\n"
    lines.append(f"host      {e.virtual_host}")
    lines.extend(
        f"  skipped {t['name']}: its {t['miss']} does not match"
        for t in e.tried
        if t["miss"] is not None
    )
    if e.route is None:
        lines.append("no route: no route of that host matches (404 NR)")
        return "\n".join(lines) + "\n"
    rt = e.route
    origin = f" (from {e.origin})" if e.origin else ""
    lines.append(f"route     {rt['name']}{origin}")
    actions = ("redirect", "direct_response", "rewrite")
    lines.extend(f"  {key:<9} {_flat(rt[key])}" for key in actions if key in rt)
    lines.append(f"  timeout  {rt['timeout']}")
    if "retries" in rt:
        rp = rt["retries"]
        on = ",".join(rp["retry_on"]) or "-"
        lines.append(f"  retries  {rp['attempts']} (per try {rp['per_try_timeout']}, on {on})")
    if rt.get("fault"):
        lines.append(f"  fault    {_flat(rt['fault'])}")
    lines.extend(f"  mirror   {m}" for m in rt.get("mirrors", []))
    for c in e.clusters:
        where = ", ".join(f"{k} {c[k]}" for k in ("host", "port", "subset") if c.get(k) is not None)
        lines.append(f"to        {c['weight']}% {c['cluster']}" + (f" ({where})" if where else ""))
        if c.get("missing"):
            lines.append("  no such cluster: 503 UH")
            continue
        lines.append(f"  balancing {c['balancing']}, {c['protocol']}, TLS {c['tls']}")
        lines.append(f"  connect timeout {c['connect_timeout']}")
        if c.get("limits"):
            lines.append(f"  connection pool {_flat(c['limits'])}")
        if "outlier_detection" in c:
            lines.append(f"  outlier detection {_flat(c['outlier_detection'])}")
        if "failure_rate_breaker" in c:
            lines.append(f"  failure-rate breaker {_flat(c['failure_rate_breaker'])}")
        if not c["endpoints"]:
            lines.append("  no endpoints: 503 UH")
        for ep in c["endpoints"]:
            state = ""
            if "health" in ep:
                state = f" {ep['health']}, {ep['rq_active']} in flight"
                if "breaker" in ep:
                    state += f", breaker {_flat(ep['breaker'])}"
            loc = f" {ep['locality']}" if "locality" in ep else ""
            lines.append(f"  endpoint {ep['address']} weight {ep['weight']}{loc}{state}")
    if not e.live:
        lines.append("(offline: endpoint health is a running sidecar's; ask one with --admin)")
    return "\n".join(lines) + "\n"


def _flat(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items() if v is not None)
    return str(value)


# --- a running sidecar --------------------------------------------------------------------


def fetch_live(admin: str, timeout: float = 10.0) -> tuple[ir.Snapshot, dict[str, Any]]:
    """The snapshot a running sidecar serves and its ``/clusters``, from its admin API."""
    base = f"http://{admin}"
    dump = json.loads(_get(f"{base}/config_dump", timeout))
    snapshot = msgspec.convert(dump["snapshot"], ir.Snapshot)
    return snapshot, json.loads(_get(f"{base}/clusters", timeout))


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
    return body
