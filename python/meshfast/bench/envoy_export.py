"""meshfast's compiled IR → an Envoy bootstrap that serves the same routes the same way.

The translation works on :class:`meshfast.config.ir.Snapshot` (not on the Istio YAML), so
Envoy gets exactly what meshfast's core gets: the same listeners, virtual hosts and domains,
the same ordered routes (first match wins in both), the same clusters, balancing policies,
endpoint weights, connect timeouts and route timeouts.

Semantics kept equal, field by field:

- ``exact``/``prefix`` → ``path``/``prefix`` (``case_sensitive: false`` for ``ignore_case``);
  ``regex`` → ``safe_regex`` (RE2; Envoy matches the whole value, as meshfast anchors its
  regexes); a route without a path condition → ``prefix: /``.
- method, authority and scheme conditions → header matchers on ``:method``, ``:authority``
  and ``:scheme``; header conditions → ``string_match`` / ``present_match`` /
  ``invert_match``. An inverted condition on a missing header sees the empty string in
  meshfast, hence ``treat_missing_header_as_empty`` on inverted matchers only.
- query conditions → ``query_parameters`` (``string_match`` or ``present_match``).
- one destination → ``cluster``; several → ``weighted_clusters`` (zero weights dropped:
  Envoy wants a positive total); none → a cluster name that does not exist, which gives
  Envoy's 503 ``NC`` as meshfast does (``validate_clusters: false`` lets a route name a
  missing cluster, e.g. an undefined subset, exactly as meshfast allows).
- ``timeout_ms`` → route ``timeout`` (``0s`` when 0: no timeout, as in meshfast; Envoy's own
  default would be 15 s).
- retries: a route without a retry policy in the IR gets ``retry_policy: {num_retries: 0}``
  (no ``retry_on``): no retry, explicitly, so both proxies do the same work. Istio would give
  each route a default policy (2 attempts on connect-failure, refused-stream, unavailable,
  cancelled, retriable-status-codes 503); that is deliberately not reproduced. Where the IR
  has a policy (``attempts``, ``retry_on``, per-try timeout, status codes, back-off,
  ``previous_hosts``) it maps one to one onto Envoy's.
- rewrites (``prefix_rewrite``, ``host_rewrite_literal``, ``regex_rewrite``), redirects,
  direct responses, header operations (remove, then set = overwrite, then add = append) and
  mirrors (``request_mirror_policies``) map onto Envoy's fields of the same meaning; fault
  injection and CORS onto per-route configs of the ``fault`` and ``cors`` HTTP filters,
  which are put in the chain (CORS, fault, router: meshfast's order) only when a route
  uses them. Anything else (a redirect with ``derive_port``, and any field the IR gains
  later) is refused with :class:`ExportError` rather than dropped: Envoy would otherwise do
  less work than meshfast.
- clusters: ``STATIC`` (``STRICT_DNS`` when an endpoint is a name), ``ROUND_ROBIN`` /
  ``LEAST_REQUEST`` (P2C, Envoy's default choice count 2, as meshfast) / ``RANDOM``,
  ``load_balancing_weight`` per endpoint, HTTP/2 upstreams through
  ``envoy.extensions.upstreams.http.v3.HttpProtocolOptions`` (explicit ``http2``).
- consistent hashing (a cluster's ``hash``) → ``RING_HASH`` (``minimum_ring_size``) or
  ``MAGLEV`` (``table_size``), with the key (header, cookie — generated with its TTL when
  absent —, source IP, query parameter) as the ``hash_policy`` of every route to it;
  endpoint localities → one ``LocalityLbEndpoints`` each, at one priority and without
  locality weights, so Envoy balances over all of them as meshfast does.
- TCP listeners → ``tcp_proxy`` with the first TCP route's clusters (meshfast uses the first).
- TLS passthrough listeners (protocol ``tls``, SNI routes) → the ``tls_inspector`` listener
  filter (its timeout = meshfast's 10 s ClientHello deadline) and one filter chain per SNI
  route with ``transport_protocol: tls`` (a connection that is not TLS matches no chain and
  is closed, as meshfast closes it) and ``server_names``, each a ``tcp_proxy`` to the
  route's destinations; a ``*`` route is the chain without ``server_names`` (Envoy's default
  for any name, or no SNI). Envoy picks the most specific name (exact, then the longest
  ``*.suffix``, then the default) where meshfast takes the first route that matches, so the
  names are rewritten to make both choose alike: a name every SNI of which an earlier route
  already takes (``api.example.com`` after ``*.example.com``, ``*.a.example.com`` after
  ``*.example.com``, anything after ``*``) is left out, and a route left without names has
  no chain (see :func:`sni_filter_chains`). Names are lowercased (meshfast matches
  lowercased SNI; Envoy compares them without case).
- TLS termination (``Listener.tls``) on HTTP listeners → the filter chain's
  ``envoy.transport_sockets.tls`` ``DownstreamTlsContext``: the PEM files by name, ALPN
  ``h2,http/1.1`` (the HCM's ``AUTO`` codec then follows ALPN, as meshfast), TLS 1.2 to 1.3 or
  1.3 only, a client CA → ``require_client_certificate`` with ``trusted_ca``; the handshake
  deadline (``transport_socket_connect_timeout``) is meshfast's 10 s.

Fairness settings (see ``bench/README.md``): ``generate_request_id: false`` (note: meshfast
does generate an ``x-request-id`` when absent, so this favours Envoy slightly), router
``dynamic_stats: false`` and ``suppress_envoy_headers: true`` (meshfast adds no
``x-envoy-*`` headers), circuit-breaker thresholds raised so they never trip, no access log.
Envoy's worker count and ``--disable-hot-restart`` are command-line flags, not bootstrap
fields: :func:`envoy_command` gives them.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from meshfast.config import ir

__all__ = [
    "CIRCUIT_BREAKER_MAX",
    "MISSING_CLUSTER",
    "ExportError",
    "bootstrap",
    "bootstrap_yaml",
    "downstream_tls",
    "envoy_command",
    "sni_filter_chains",
    "split_address",
    "unhandled_fields",
]

Json = dict[str, Any]

HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = f"type.googleapis.com/{HTTP_OPTIONS_KEY}"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS_FILTER = "envoy.filters.http.cors"
CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
TLS_INSPECTOR_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
# meshfast drops a connection whose ClientHello (passthrough) or handshake (termination) takes
# longer than this (rust/proxy/src/tls.rs, HANDSHAKE_TIMEOUT).
TLS_HANDSHAKE_TIMEOUT = "10s"
PREVIOUS_HOSTS_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
# A route with no destination goes here: no such cluster, so Envoy answers 503 NC.
MISSING_CLUSTER = "meshfast|no-destination"
# High enough never to trip in a benchmark (Envoy's defaults: 1,024 each).
CIRCUIT_BREAKER_MAX = 1_000_000_000


class ExportError(ValueError):
    """The snapshot uses something this translation does not express (yet): refused, never
    silently dropped, since Envoy would then do less work than meshfast."""


def unhandled_fields(struct: msgspec.Struct, handled: Iterable[str]) -> list[str]:
    """Fields of ``struct`` that are set (differ from their default) and not in ``handled``.

    A field the IR gains later is caught here until the translation learns it.
    """
    done = set(handled)
    out = []
    for f in msgspec.structs.fields(struct):
        if f.name in done:
            continue
        if f.default is not msgspec.NODEFAULT:
            default = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        else:
            out.append(f.name)  # required and not translated
            continue
        if getattr(struct, f.name) != default:
            out.append(f.name)
    return out


def _refuse(struct: msgspec.Struct, handled: Iterable[str], where: str) -> None:
    fields = unhandled_fields(struct, handled)
    if fields:
        raise ExportError(f"{where}: {', '.join(fields)}: not translated to Envoy yet")


def split_address(address: str) -> tuple[str, int]:
    """``'127.0.0.1:80'`` → ``('127.0.0.1', 80)``; ``'[::1]:80'`` → ``('::1', 80)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


def _socket_address(address: str) -> Json:
    host, port = split_address(address)
    return {"socket_address": {"address": host, "port_value": port}}


def _duration(ms: int) -> str:
    """Protobuf JSON duration: 1500 → ``'1.500s'``, 0 → ``'0s'``."""
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms // 1000}.{ms % 1000:03d}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# === matches ===


def _string_match(m: ir.StringMatch) -> Json:
    """An ``envoy.type.matcher.v3.StringMatcher``."""
    if m.kind == "exact":
        out: Json = {"exact": m.value}
    elif m.kind == "prefix":
        out = {"prefix": m.value}
    else:
        # RE2's inline flag: meshfast builds its regexes case-insensitive on ignore_case.
        return {"safe_regex": {"regex": f"(?i){m.value}" if m.ignore_case else m.value}}
    if m.ignore_case:
        out["ignore_case"] = True
    return out


def _header(name: str, value: ir.StringMatch | None, *, invert: bool = False) -> Json:
    out: Json = {"name": name}
    if value is None:
        out["present_match"] = True
    else:
        out["string_match"] = _string_match(value)
        if invert:
            # meshfast: an inverted condition on a missing header sees "".
            out["treat_missing_header_as_empty"] = True
    if invert:
        out["invert_match"] = True
    return out


def _path_match(m: ir.StringMatch | None) -> Json:
    if m is None:
        return {"prefix": "/"}
    if m.kind == "regex":
        regex = f"(?i){m.value}" if m.ignore_case else m.value
        return {"safe_regex": {"regex": regex}}
    out: Json = {"path" if m.kind == "exact" else "prefix": m.value}
    if m.ignore_case:
        out["case_sensitive"] = False
    return out


def route_match(m: ir.RouteMatch) -> Json:
    """An ``envoy.config.route.v3.RouteMatch`` with the IR match's semantics."""
    out = _path_match(m.path)
    headers = [
        _header(pseudo, value)
        for pseudo, value in ((":method", m.method), (":authority", m.authority))
        if value is not None
    ]
    if m.scheme is not None:
        headers.append(_header(":scheme", m.scheme))
    headers.extend(_header(h.name, h.value, invert=h.invert) for h in m.headers)
    if headers:
        out["headers"] = headers
    if m.query_params:
        out["query_parameters"] = [
            {"name": q.name, "present_match": True}
            if q.value is None
            else {"name": q.name, "string_match": _string_match(q.value)}
            for q in m.query_params
        ]
    return out


# === actions ===


def _has_header_ops(cluster: ir.WeightedCluster) -> bool:
    return bool(
        _header_ops(cluster.request_headers, "request")
        or _header_ops(cluster.response_headers, "response")
    )


def _destinations(clusters: Sequence[ir.WeightedCluster]) -> Json:
    """``cluster`` or ``weighted_clusters`` (the keys of a RouteAction or a TcpProxy).

    One destination takes all traffic whatever its weight (as in meshfast); among several,
    zero weights are dropped. Header operations of a destination need the
    ``weighted_clusters`` form (Envoy has them per ``ClusterWeight``), even for one.
    """
    chosen = list(clusters) if len(clusters) == 1 else [c for c in clusters if c.weight > 0]
    if not chosen:
        return {"cluster": MISSING_CLUSTER}
    if len(chosen) == 1 and not _has_header_ops(chosen[0]):
        return {"cluster": chosen[0].cluster}
    entries = []
    for c in chosen:
        entry: Json = {"name": c.cluster, "weight": max(1, c.weight)}
        entry.update(_header_ops(c.request_headers, "request"))
        entry.update(_header_ops(c.response_headers, "response"))
        entries.append(entry)
    return {"weighted_clusters": {"clusters": entries}}


def _header_ops(ops: ir.HeaderOps, prefix: str) -> Json:
    """IR ``HeaderOps`` (remove, then set, then add — Envoy's order too) → route fields."""
    out: Json = {}
    adds = [
        {"header": {"key": h.name, "value": h.value}, "append_action": action}
        for action, values in (
            ("OVERWRITE_IF_EXISTS_OR_ADD", ops.set),
            ("APPEND_IF_EXISTS_OR_ADD", ops.add),
        )
        for h in values
    ]
    if adds:
        out[f"{prefix}_headers_to_add"] = adds
    if ops.remove:
        out[f"{prefix}_headers_to_remove"] = list(ops.remove)
    return out


def _retry_policy(retry: ir.RetryPolicy | None) -> Json:
    if retry is None:
        # meshfast does not retry on this route: say so explicitly rather than rely on a default.
        return {"num_retries": 0}
    policy: Json = {"retry_on": ",".join(retry.retry_on), "num_retries": retry.attempts}
    if retry.per_try_timeout_ms:
        policy["per_try_timeout"] = _duration(retry.per_try_timeout_ms)
    if retry.retriable_status_codes:
        policy["retriable_status_codes"] = list(retry.retriable_status_codes)
    if retry.backoff_base_ms:
        policy["retry_back_off"] = {"base_interval": _duration(retry.backoff_base_ms)}
    if retry.previous_hosts:
        policy["retry_host_predicate"] = [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PREVIOUS_HOSTS_TYPE},
            }
        ]
        policy["host_selection_retry_max_attempts"] = 5  # as Istio sets it
    return policy


def _hash_policy(policy: ir.HashPolicy) -> Json:
    """A route ``hash_policy`` entry: where the key of a consistent-hash cluster comes from."""
    if policy.source == "header":
        return {"header": {"header_name": policy.name}}
    if policy.source == "query":
        return {"query_parameter": {"name": policy.name}}
    if policy.source == "source_ip":
        return {"connection_properties": {"source_ip": True}}
    cookie: Json = {"name": policy.name}
    if policy.cookie_ttl_ms is not None:  # generate it when absent (0s: a session cookie)
        cookie["ttl"] = _duration(policy.cookie_ttl_ms)
    if policy.cookie_path is not None:
        cookie["path"] = policy.cookie_path
    return {"cookie": cookie}


def route_action(
    action: ir.RouteAction,
    where: str = "route",
    hashes: Mapping[str, ir.HashPolicy] | None = None,
) -> Json:
    """An ``envoy.config.route.v3.RouteAction`` (the ``route`` key of a Route).

    ``hashes``: consistent-hash policies by cluster name. Envoy takes the hash key from the
    route, so a route to such a cluster carries its ``hash_policy``.
    """
    out = _destinations(action.clusters)
    chosen = (
        action.clusters if len(action.clusters) == 1 else [c for c in action.clusters if c.weight]
    )
    policies = {hashes[c.cluster] for c in chosen if hashes and c.cluster in hashes}
    if len(policies) > 1:
        raise ExportError(f"{where}: destinations with different consistent-hash keys")
    if policies:
        out["hash_policy"] = [_hash_policy(next(iter(policies)))]
    for cluster in action.clusters:
        _refuse(
            cluster,
            ("cluster", "weight", "request_headers", "response_headers"),
            f"{where} -> {cluster.cluster}",
        )
    out["timeout"] = _duration(action.timeout_ms)  # "0s": no timeout, as in meshfast
    rewrite = action.rewrite
    if rewrite is not None:
        if rewrite.uri is not None:
            out["prefix_rewrite"] = rewrite.uri
        if rewrite.authority is not None:
            out["host_rewrite_literal"] = rewrite.authority
        if rewrite.regex is not None:
            out["regex_rewrite"] = {
                "pattern": {"regex": rewrite.regex.pattern},
                "substitution": rewrite.regex.substitution,
            }
    out["retry_policy"] = _retry_policy(action.retry)
    if action.mirrors:
        mirrors = []
        for mirror in action.mirrors:
            policy: Json = {"cluster": mirror.cluster}
            if mirror.millionths < 1_000_000:
                policy["runtime_fraction"] = {"default_value": _millionths(mirror.millionths)}
            mirrors.append(policy)
        out["request_mirror_policies"] = mirrors
    return out


_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def _redirect(redirect: ir.Redirect, where: str) -> Json:
    code = redirect.code or 301  # meshfast's default
    if redirect.derive_port is not None or code not in _REDIRECT_CODES:
        raise ExportError(f"{where}: this redirect is not translated to Envoy yet")
    out: Json = {"response_code": _REDIRECT_CODES[code]}
    for field, key in (
        ("scheme", "scheme_redirect"),
        ("authority", "host_redirect"),
        ("port", "port_redirect"),
        ("path", "path_redirect"),
        ("prefix_rewrite", "prefix_rewrite"),
    ):
        value = getattr(redirect, field)
        if value is not None:
            out[key] = value
    return out


def _direct_response(response: ir.DirectResponse) -> Json:
    out: Json = {"status": response.status}
    body = response.body
    if body is not None:
        try:
            out["body"] = {"inline_string": bytes(body).decode("utf-8")}
        except UnicodeDecodeError:
            out["body"] = {"inline_bytes": base64.b64encode(bytes(body)).decode("ascii")}
    return out


# Fields of RouteAction this module translates; any other one set is refused.
def _millionths(value: int) -> Json:
    """An ``envoy.type.v3.FractionalPercent`` in millionths (Istio's 1e-4 % precision)."""
    return {"numerator": value, "denominator": "MILLION"}


def _fault(fault: ir.Fault) -> Json:
    """Per-route ``envoy.filters.http.fault`` config: the delay, then the abort (both filters
    and meshfast run them in that order)."""
    out: Json = {"@type": FAULT_TYPE}
    if fault.delay_ms and fault.delay_millionths:
        out["delay"] = {
            "fixed_delay": _duration(fault.delay_ms),
            "percentage": _millionths(fault.delay_millionths),
        }
    if fault.abort_millionths and (
        fault.abort_http_status is not None or fault.abort_grpc_status is not None
    ):
        abort: Json = {"percentage": _millionths(fault.abort_millionths)}
        if fault.abort_grpc_status is not None:
            abort["grpc_status"] = fault.abort_grpc_status
        else:
            abort["http_status"] = fault.abort_http_status
        out["abort"] = abort
    return out


def _cors(cors: ir.Cors) -> Json:
    """Per-route ``envoy.filters.http.cors`` policy."""
    out: Json = {
        "@type": CORS_POLICY_TYPE,
        "allow_origin_string_match": [_string_match(m) for m in cors.allow_origins],
        "forward_not_matching_preflights": cors.forward_unmatched_preflights,
    }
    for field, values in (
        ("allow_methods", cors.allow_methods),
        ("allow_headers", cors.allow_headers),
        ("expose_headers", cors.expose_headers),
    ):
        if values:
            out[field] = ",".join(values)
    if cors.max_age_s is not None:
        out["max_age"] = str(cors.max_age_s)
    if cors.allow_credentials is not None:
        out["allow_credentials"] = cors.allow_credentials
    return out


# Fields of RouteAction this module translates; any other one set is refused.
_ACTION_FIELDS = (
    "clusters",
    "timeout_ms",
    "rewrite",
    "retry",
    "redirect",
    "direct_response",
    "request_headers",
    "response_headers",
    "fault",
    "mirrors",
    "cors",
)


def _route(route: ir.Route, vhost: str, hashes: Mapping[str, ir.HashPolicy]) -> Json:
    where = f"virtual host {vhost}, route {route.name}"
    action = route.action
    _refuse(action, _ACTION_FIELDS, where)
    _refuse(
        route.match_, ("path", "method", "authority", "scheme", "headers", "query_params"), where
    )
    _refuse(route, ("name", "match_", "action"), where)
    out: Json = {"name": route.name, "match": route_match(route.match_)}
    if action.redirect is not None:
        out["redirect"] = _redirect(action.redirect, where)
    elif action.direct_response is not None:
        out["direct_response"] = _direct_response(action.direct_response)
    else:
        out["route"] = route_action(action, where, hashes)
    out.update(_header_ops(action.request_headers, "request"))
    out.update(_header_ops(action.response_headers, "response"))
    per_filter: Json = {}
    if action.cors is not None:
        per_filter[CORS_FILTER] = _cors(action.cors)
    if action.fault is not None:
        per_filter[FAULT_FILTER] = _fault(action.fault)
    if per_filter:
        out["typed_per_filter_config"] = per_filter
    return out


def _virtual_host(vh: ir.VirtualHost, hashes: Mapping[str, ir.HashPolicy]) -> Json:
    _refuse(vh, ("name", "domains", "routes"), f"virtual host {vh.name}")
    return {
        "name": vh.name,
        "domains": list(vh.domains),
        "routes": [_route(r, vh.name, hashes) for r in vh.routes],
    }


# === listeners ===


def _http_filters(virtual_hosts: Sequence[Json]) -> list[Json]:
    """CORS, then fault, then the router — each filter only when some route uses it, so
    Envoy's chain is no longer than the work meshfast does."""
    used = {
        name
        for vh in virtual_hosts
        for route in vh["routes"]
        for name in route.get("typed_per_filter_config", {})
    }
    filters = [
        {"name": name, "typed_config": {"@type": type_}}
        for name, type_ in ((CORS_FILTER, CORS_TYPE), (FAULT_FILTER, FAULT_TYPE))
        if name in used
    ]
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": ROUTER_TYPE,
                "dynamic_stats": False,
                "suppress_envoy_headers": True,
            },
        }
    )
    return filters


def _http_listener(
    listener: ir.Listener, table: ir.RouteTable | None, hashes: Mapping[str, ir.HashPolicy]
) -> Json:
    virtual_hosts = [_virtual_host(v, hashes) for v in (table.virtual_hosts if table else ())]
    hcm: Json = {
        "@type": HCM_TYPE,
        "stat_prefix": listener.name,
        "codec_type": "AUTO",  # HTTP/1.1 and h2c (prior knowledge), as meshfast's listeners
        "generate_request_id": False,
        "route_config": {
            "name": listener.route_table or listener.name,
            # Routes may name a cluster that does not exist (503 NC), as in meshfast.
            "validate_clusters": False,
            "virtual_hosts": virtual_hosts,
        },
        "http_filters": _http_filters(virtual_hosts),
    }
    chain: Json = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if listener.tls is not None:
        chain["transport_socket"] = downstream_tls(listener.tls, f"listener {listener.name}")
        chain["transport_socket_connect_timeout"] = TLS_HANDSHAKE_TIMEOUT
    return {
        "name": listener.name,
        "address": _socket_address(listener.address),
        "filter_chains": [chain],
    }


def _tcp_proxy(stat_prefix: str, clusters: Sequence[ir.WeightedCluster]) -> Json:
    """A ``tcp_proxy`` network filter to ``clusters`` (none: a missing cluster, so closed)."""
    proxy: Json = {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix}
    proxy.update(_destinations(clusters) if clusters else {"cluster": MISSING_CLUSTER})
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}


def _tcp_listener(listener: ir.Listener) -> Json:
    for route in listener.tcp_routes:
        _refuse(route, ("name", "clusters"), f"listener {listener.name}, TCP route {route.name}")
        for c in route.clusters:
            _refuse(c, ("cluster", "weight"), f"listener {listener.name} -> {c.cluster}")
    first = listener.tcp_routes[0].clusters if listener.tcp_routes else ()
    return {
        "name": listener.name,
        "address": _socket_address(listener.address),
        "filter_chains": [{"filters": [_tcp_proxy(listener.name, first)]}],
    }


def _sni_pattern(host: str, where: str) -> str:
    """An IR SNI host, lowercased (as meshfast matches it); refused unless Envoy can say it."""
    pattern = host.lower()
    exact = bool(pattern) and "*" not in pattern
    wildcard = pattern.startswith("*.") and len(pattern) > 2 and "*" not in pattern[1:]
    if not (exact or wildcard or pattern == "*"):
        raise ExportError(
            f"{where}: SNI host {host!r} is not an exact name, *.suffix or *:"
            " not translated to Envoy"
        )
    return pattern


def _covers(earlier: str, later: str) -> bool:
    """Whether every SNI that ``later`` matches is matched by ``earlier`` too.

    meshfast's matching (``rust/proxy/src/tls.rs``, ``sni_matches``): ``*`` matches anything
    (no SNI too), ``*.suffix`` any name longer than ``.suffix`` that ends with it (any depth,
    as Envoy's wildcards), anything else that name only.
    """
    if earlier == "*":
        return True
    if earlier.startswith("*."):
        suffix = earlier[1:]  # ".example.com"
        if later.startswith("*."):
            return later[1:].endswith(suffix)  # *.a.example.com within *.example.com
        return later != "*" and len(later) > len(suffix) and later.endswith(suffix)
    return earlier == later


def sni_filter_chains(listener: ir.Listener) -> list[Json]:
    """One filter chain per SNI route that can still be chosen, in the IR's order.

    meshfast takes the FIRST route with a matching SNI host; Envoy takes the chain with the
    MOST SPECIFIC matching ``server_names`` entry (the exact name, then the longest
    ``*.suffix``, then the chain without names), whatever the order. The two agree once every
    name whose SNIs an earlier route already takes all of is dropped: a name kept can then only
    be beaten in Envoy by a more specific name of an earlier route, which meshfast also picks
    first, and a less specific name of an earlier route never covers a later, more specific one
    (it would have been dropped). Envoy also refuses the same name in two chains, which this
    prevents. A route left with no name is unreachable in meshfast and gets no chain; a route
    with ``*`` becomes the chain without names (its other names add nothing), and every route
    after it is unreachable.
    """
    chains: list[Json] = []
    taken: list[str] = []  # names of the routes before, in order
    chain_names: set[str] = set()
    for route in listener.sni_routes:
        where = f"listener {listener.name}, SNI route {route.name}"
        _refuse(route, ("name", "sni_hosts", "clusters"), where)
        for c in route.clusters:
            _refuse(c, ("cluster", "weight"), f"{where} -> {c.cluster}")
        names: list[str] = []
        for host in route.sni_hosts:
            pattern = _sni_pattern(host, where)
            if pattern not in names and not any(_covers(e, pattern) for e in taken):
                names.append(pattern)
        taken.extend(names)
        if not names:
            continue  # every SNI it would take goes to an earlier route in meshfast
        match: Json = {"transport_protocol": "tls"}  # not TLS: no chain, closed (as meshfast)
        if "*" not in names:
            match["server_names"] = names
        name = route.name
        while name in chain_names:  # Envoy wants unique chain names
            name += "'"
        chain_names.add(name)
        chains.append(
            {
                "name": name,
                "filter_chain_match": match,
                "filters": [_tcp_proxy(listener.name, route.clusters)],
            }
        )
    if not chains:
        # meshfast reads the ClientHello, finds no route and closes; so does this chain
        # (a cluster that does not exist). Envoy wants at least one chain.
        chains.append(
            {
                "name": "no-route",
                "filter_chain_match": {"transport_protocol": "tls"},
                "filters": [_tcp_proxy(listener.name, ())],
            }
        )
    return chains


def _tls_listener(listener: ir.Listener) -> Json:
    """SNI-routed TLS passthrough: the ClientHello is read, never terminated."""
    return {
        "name": listener.name,
        "address": _socket_address(listener.address),
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": TLS_INSPECTOR_TYPE},
            }
        ],
        "listener_filters_timeout": TLS_HANDSHAKE_TIMEOUT,
        "filter_chains": sni_filter_chains(listener),
    }


_TLS_VERSIONS = {None: "TLSv1_2", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}


def downstream_tls(tls: ir.TlsServer, where: str) -> Json:
    """The ``transport_socket`` of an HTTP filter chain terminating TLS as meshfast does
    (rustls: TLS 1.2 and 1.3, or 1.3 only; ALPN h2, http/1.1; client certificates required
    and checked against the CA when there is one)."""
    _refuse(tls, ("cert_chain", "private_key", "client_ca", "min_version"), where)
    if tls.min_version not in _TLS_VERSIONS:
        raise ExportError(f"{where}: TLS minimum version {tls.min_version}: not translated")
    context: Json = {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": tls.cert_chain},
                "private_key": {"filename": tls.private_key},
            }
        ],
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_params": {
            "tls_minimum_protocol_version": _TLS_VERSIONS[tls.min_version],
            "tls_maximum_protocol_version": "TLSv1_3",
        },
    }
    out: Json = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": context}
    if tls.client_ca is not None:
        context["validation_context"] = {"trusted_ca": {"filename": tls.client_ca}}
        out["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": out}


# === clusters ===


def _locality(text: str) -> Json:
    """``region/zone/subzone`` → an ``envoy.config.core.v3.Locality``."""
    parts = [*text.split("/", 2), "", ""][:3]
    return {k: v for k, v in zip(("region", "zone", "sub_zone"), parts, strict=True) if v}


def _thresholds(limits: ir.ConnectionLimits | None) -> Json:
    """The cluster's connectionPool limits as Envoy's circuit breakers; what is not limited is
    raised to ``CIRCUIT_BREAKER_MAX`` (Envoy's own defaults, e.g. 1024 requests, would trip)."""
    limits = limits or ir.ConnectionLimits()

    def threshold(value: int) -> int:
        return CIRCUIT_BREAKER_MAX if value >= ir.UNLIMITED else value

    return {
        "priority": "DEFAULT",
        "max_connections": threshold(limits.max_connections),
        "max_pending_requests": threshold(limits.max_pending_requests),
        "max_requests": threshold(limits.max_requests),
        "max_retries": threshold(limits.max_retries),
    }


def _outlier_detection(o: ir.OutlierDetection) -> Json:
    """Istio's ``outlierDetection`` as istiod writes it for Envoy: consecutive 5xx and gateway
    errors enforced (100%) when set, success-rate ejection off, the panic threshold from
    ``minHealthPercent``."""
    od: Json = {
        "interval": _duration(o.interval_ms),
        "base_ejection_time": _duration(o.base_ejection_ms),
        "max_ejection_percent": o.max_ejection_percent,
        "enforcing_success_rate": 0,
        "consecutive_5xx": o.consecutive_5xx or CIRCUIT_BREAKER_MAX,
        "enforcing_consecutive_5xx": 100 if o.consecutive_5xx else 0,
        "consecutive_gateway_failure": o.consecutive_gateway or CIRCUIT_BREAKER_MAX,
        "enforcing_consecutive_gateway_failure": 100 if o.consecutive_gateway else 0,
    }
    panic = {"healthy_panic_threshold": {"value": float(o.min_health_percent)}}
    return {"outlier_detection": od, "common_lb_config": panic}


def _cluster(cluster: ir.Cluster) -> Json:
    where = f"cluster {cluster.name}"
    handled = (
        "name", "lb", "protocol", "connect_timeout_ms", "endpoints", "hash", "limits", "outlier",
    )  # fmt: skip
    _refuse(cluster, handled, where)
    # One LocalityLbEndpoints per locality, all at priority 0 and without locality weights:
    # Envoy balances over the union, as meshfast (which does not use localities yet) does.
    by_locality: dict[str, list[Json]] = {}
    names = False
    for ep in cluster.endpoints:
        _refuse(ep, ("address", "weight", "labels", "locality"), f"{where}, endpoint {ep.address}")
        host, port = split_address(ep.address)
        names = names or not _is_ip(host)
        by_locality.setdefault(ep.locality, []).append(
            {
                "endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}},
                "load_balancing_weight": max(1, ep.weight),
            }
        )
    endpoints: list[Json] = []
    for locality, lb_endpoints in by_locality.items():
        group: Json = {"lb_endpoints": lb_endpoints}
        if locality:
            group["locality"] = _locality(locality)
        endpoints.append(group)
    out: Json = {
        "name": cluster.name,
        "type": "STRICT_DNS" if names else "STATIC",
        "connect_timeout": _duration(cluster.connect_timeout_ms),
        # Envoy has no peak-EWMA balancer: least request is the nearest.
        "lb_policy": "LEAST_REQUEST" if cluster.lb == "PEAK_EWMA" else cluster.lb,
        "load_assignment": {"cluster_name": cluster.name, "endpoints": endpoints},
        "circuit_breakers": {"thresholds": [_thresholds(cluster.limits)]},
    }
    if cluster.outlier is not None:
        out.update(_outlier_detection(cluster.outlier))
    if cluster.hash is not None:
        # Consistent hashing replaces the cluster's policy (the key comes from the routes).
        if cluster.hash.algorithm == "maglev":
            out["lb_policy"] = "MAGLEV"
            out["maglev_lb_config"] = {"table_size": cluster.hash.table_size}
        else:
            out["lb_policy"] = "RING_HASH"
            out["ring_hash_lb_config"] = {"minimum_ring_size": cluster.hash.table_size}
    if cluster.protocol == "http2":
        out["typed_extension_protocol_options"] = {
            HTTP_OPTIONS_KEY: {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return out


# === the bootstrap ===


# The fields each kind of listener uses: any other one set (e.g. ``tls`` on a TCP listener,
# ``sni_routes`` on an HTTP one) is refused rather than ignored.
_LISTENER_FIELDS: dict[str, tuple[str, ...]] = {
    "http": ("name", "address", "protocol", "route_table", "tls"),
    "tcp": ("name", "address", "protocol", "tcp_routes"),
    "tls": ("name", "address", "protocol", "sni_routes"),
}


def bootstrap(snapshot: ir.Snapshot, *, admin_port: int = 15000) -> Json:
    """The Envoy bootstrap (as JSON-ready builtins) serving ``snapshot``."""
    _refuse(snapshot, ("version", "listeners", "route_tables", "clusters"), "snapshot")
    tables = {t.name: t for t in snapshot.route_tables}
    hashes = {c.name: c.hash for c in snapshot.clusters if c.hash is not None}
    listeners = []
    for x in snapshot.listeners:
        where = f"listener {x.name} ({x.protocol})"
        handled = _LISTENER_FIELDS.get(x.protocol)
        if handled is None:
            raise ExportError(f"{where}: protocol {x.protocol!r}: not translated to Envoy yet")
        _refuse(x, handled, where)
        if x.protocol == "tcp":
            listeners.append(_tcp_listener(x))
        elif x.protocol == "tls":
            listeners.append(_tls_listener(x))
        else:
            listeners.append(_http_listener(x, tables.get(x.route_table or ""), hashes))
    return {
        "node": {"id": "meshfast-export", "cluster": "meshfast-export"},
        "admin": {"address": _socket_address(f"127.0.0.1:{admin_port}")},
        "static_resources": {
            "listeners": listeners,
            "clusters": [_cluster(c) for c in snapshot.clusters],
        },
    }


def envoy_command(envoy: str, config: str, *, workers: int) -> list[str]:
    """The command line the benchmark runs Envoy with (flags are not bootstrap fields)."""
    return [
        envoy,
        "-c",
        config,
        "--concurrency",
        str(workers),
        "--disable-hot-restart",  # two Envoys on one machine must not share memory
        "--log-level",
        "warn",
    ]


def bootstrap_yaml(snapshot: ir.Snapshot, *, admin_port: int = 15000, workers: int = 1) -> str:
    """:func:`bootstrap` as YAML, with a header saying how to run it."""
    import yaml

    header = (
        f"# Envoy bootstrap exported by `meshfast export-envoy` (IR version {snapshot.version}).\n"
        f"# Run: {' '.join(envoy_command('envoy', 'THIS_FILE.yaml', workers=workers))}\n"
        "# Same routes, balancing and timeouts as meshfast; retries explicitly off;\n"
        "# generate_request_id, dynamic_stats and envoy headers off; circuit breakers raised.\n"
    )
    body: str = yaml.dump(
        bootstrap(snapshot, admin_port=admin_port),
        Dumper=_yaml_dumper(),
        sort_keys=False,
        width=100,
    )
    return header + body


def _yaml_dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        """PyYAML leaves ``y``/``n`` bare, which Envoy's YAML reader takes as booleans (a route
        or SNI route named ``y`` would break the bootstrap): quote them."""

        def represent_str(self, data: str) -> yaml.ScalarNode:
            if data in _YAML_11_BOOLS:
                return self.represent_scalar("tag:yaml.org,2002:str", data, style="'")
            return super().represent_str(data)

    Dumper.add_representer(str, Dumper.represent_str)
    return Dumper


_YAML_11_BOOLS = frozenset({"y", "Y", "n", "N"})
