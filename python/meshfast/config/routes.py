"""VirtualService ``http[]`` rules → IR routes and route actions (Istio/Envoy semantics).

Encoding choices the data plane relies on:

* Header operations: names lowercased; ``set`` and ``add`` sorted by name, ``remove`` sorted and
  deduplicated.  Values are literal (``%%`` in the config becomes ``%``; other ``%`` substitutions
  are rejected by validation).  A request ``set``/``add`` of ``host`` or ``:authority`` at route
  level becomes ``Rewrite.authority``, as istiod turns it into ``host_rewrite_literal``.
* Retries: ``retries`` absent → :data:`DEFAULT_RETRY` (istiod's default for outbound routes);
  ``attempts: 0`` → no policy; numeric ``retryOn`` entries → ``retriable_status_codes`` with
  ``retriable-status-codes`` appended to ``retry_on`` once.
* Percentages (fault, mirrors) in millionths: ``round(value * 10_000)``; the deprecated integer
  forms ``percent``/``mirrorPercent`` times 10 000.  A fault percentage left out is 0 (nothing
  injected); a mirror percentage left out is 100 %; a mirror at 0 is left out of the IR.
* Redirects and direct responses carry no clusters, timeout, retry, rewrite, fault or mirrors.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from meshfast.config import http_route as h
from meshfast.config import ir
from meshfast.config import resources as r
from meshfast.config import tls_route as t
from meshfast.config.duration import parse_ms
from meshfast.config.gateway import MESH, bound_gateways

DEFAULT_RETRY = ir.RetryPolicy(
    attempts=2,
    retry_on=(
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    ),
    retriable_status_codes=(),
    backoff_base_ms=25,
    previous_hosts=True,
)

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions.
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

GRPC_STATUS = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

AUTHORITY_HEADERS = frozenset({"host", ":authority"})

DestFn = Callable[[h.Destination], str]
"""The cluster name of a destination, for the port the route table serves."""


# --- matches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """What the config-time (SEL) match fields are checked against: this proxy."""

    gateway: str = MESH  # ``mesh`` for a sidecar, else the Gateway's ``ns/name`` key
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)


def applies(
    m: h.HTTPMatchRequest | r.L4MatchAttributes | t.TLSMatchAttributes,
    vs_namespace: str,
    proxy: Proxy,
) -> bool:
    """Whether match entry ``m`` is kept on ``proxy`` (never evaluated per request).

    All of: its own ``gateways`` (when set) name ``proxy.gateway``; every ``sourceLabels``
    key/value is one of ``proxy.labels``; ``sourceNamespace`` (when set) is ``proxy.namespace``.
    """
    if m.gateways and proxy.gateway not in bound_gateways(m.gateways, vs_namespace):
        return False
    if any(proxy.labels.get(k) != v for k, v in m.source_labels.items()):
        return False
    return not m.source_namespace or m.source_namespace == proxy.namespace


def string_match(m: h.StringMatch | None, ignore_case: bool = False) -> ir.StringMatch | None:
    if m is None:
        return None
    if m.exact is not None:
        return ir.StringMatch(kind="exact", value=m.exact, ignore_case=ignore_case)
    if m.prefix is not None:
        return ir.StringMatch(kind="prefix", value=m.prefix, ignore_case=ignore_case)
    if m.regex is not None:
        return ir.StringMatch(kind="regex", value=m.regex)
    return None


def _presence(m: h.StringMatch) -> bool:
    return (m.exact is None and m.prefix is None and m.regex is None) or m.regex == "*"


_PSEUDO = frozenset({"uri", "scheme", "method", "authority"})


def route_match(m: h.HTTPMatchRequest | None) -> ir.RouteMatch:
    if m is None:
        return ir.RouteMatch()
    headers = [
        ir.HeaderMatch(name=k.lower(), value=None if _presence(v) else string_match(v))
        for k, v in m.headers.items()
        if k.lower() not in _PSEUDO
    ]
    headers.extend(
        ir.HeaderMatch(name=k.lower(), value=None if _presence(v) else string_match(v), invert=True)
        for k, v in m.without_headers.items()
        if k.lower() not in _PSEUDO
    )
    return ir.RouteMatch(
        path=string_match(m.uri, m.ignore_uri_case),
        method=string_match(m.method),
        authority=string_match(m.authority),
        scheme=string_match(m.scheme),
        headers=tuple(headers),
        query_params=tuple(
            ir.QueryMatch(name=k, value=None if _presence(v) else string_match(v))
            for k, v in m.query_params.items()
        ),
    )


def catch_all(m: ir.RouteMatch) -> bool:
    path_all = m.path is None or (m.path.kind == "prefix" and m.path.value == "/")
    return (
        path_all
        and m.method is None
        and m.authority is None
        and m.scheme is None
        and not m.headers
        and not m.query_params
    )


# --- action parts -------------------------------------------------------------------------


def millionths(p: h.Percent) -> int:
    return round(p.value * 10_000)


def _ms(duration: str | None, default: int = 0) -> int:
    return round(parse_ms(duration)) if duration else default


def header_ops(ops: h.HeaderOperations | None, *, request: bool) -> tuple[ir.HeaderOps, str | None]:
    """The IR operations, and the authority a request ``set``/``add`` of host/:authority gives."""
    if ops is None:
        return ir.HeaderOps(), None
    authority: str | None = None

    def values(items: dict[str, str]) -> tuple[ir.HeaderValue, ...]:
        nonlocal authority
        out = []
        for name, value in items.items():
            n = name.lower()
            if request and n in AUTHORITY_HEADERS:
                authority = value
                continue
            out.append(ir.HeaderValue(name=n, value=value.replace("%%", "%")))
        return tuple(sorted(out, key=lambda v: v.name))

    result = ir.HeaderOps(
        set=values(ops.set),
        add=values(ops.add),
        remove=tuple(sorted({n.lower() for n in ops.remove})),
    )
    return result, authority


def parse_retry_on(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Envoy conditions and retriable status codes of an Istio ``retryOn`` string."""
    on: list[str] = []
    codes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit():
            codes.append(int(part))
        else:
            on.append(part)
    if codes and "retriable-status-codes" not in on:
        on.append("retriable-status-codes")
    return tuple(on), tuple(codes)


def retry_policy(retries: h.HTTPRetry | None) -> ir.RetryPolicy | None:
    if retries is None:
        return DEFAULT_RETRY
    if retries.attempts <= 0:
        return None
    on, codes = DEFAULT_RETRY.retry_on, DEFAULT_RETRY.retriable_status_codes
    if retries.retry_on:
        on, codes = parse_retry_on(retries.retry_on)
    previous = retries.retry_ignore_previous_hosts
    return ir.RetryPolicy(
        attempts=retries.attempts,
        per_try_timeout_ms=_ms(retries.per_try_timeout),
        retry_on=on,
        retriable_status_codes=codes,
        backoff_base_ms=_ms(retries.backoff, DEFAULT_RETRY.backoff_base_ms),
        previous_hosts=True if previous is None else previous,
        remote_localities=bool(retries.retry_remote_localities),
    )


def fault(f: h.HTTPFaultInjection | None) -> ir.Fault | None:
    if f is None or (f.delay is None and f.abort is None):
        return None
    delay_ms = delay_m = 0
    if f.delay is not None and f.delay.fixed_delay:
        delay_ms = _ms(f.delay.fixed_delay)
        if f.delay.percentage is not None:
            delay_m = millionths(f.delay.percentage)
        else:
            delay_m = (f.delay.percent or 0) * 10_000
    http_status = grpc_status = None
    abort_m = 0
    if f.abort is not None:
        http_status = f.abort.http_status
        if f.abort.grpc_status is not None:
            grpc_status = GRPC_STATUS[f.abort.grpc_status]
        if f.abort.percentage is not None:
            abort_m = millionths(f.abort.percentage)
    return ir.Fault(
        delay_ms=delay_ms,
        delay_millionths=delay_m,
        abort_http_status=http_status,
        abort_grpc_status=grpc_status,
        abort_millionths=abort_m,
    )


def mirrors(http: h.HTTPRoute, dest: DestFn) -> tuple[ir.Mirror, ...]:
    out = []
    if http.mirror is not None:
        percent = (
            http.mirror_percent if http.mirror_percent is not None else http.mirror_percent_snake
        )
        if http.mirror_percentage is not None:
            m = millionths(http.mirror_percentage)
        elif percent is not None:
            m = percent * 10_000
        else:
            m = 1_000_000
        if m > 0:
            out.append(ir.Mirror(cluster=dest(http.mirror), millionths=m))
    for policy in http.mirrors:
        m = 1_000_000 if policy.percentage is None else millionths(policy.percentage)
        if m > 0:
            out.append(ir.Mirror(cluster=dest(policy.destination), millionths=m))
    return tuple(out)


def cors(c: h.CorsPolicy | None) -> ir.Cors | None:
    if c is None:
        return None
    if c.allow_origins:
        origins = tuple(o for o in (string_match(m) for m in c.allow_origins) if o is not None)
    else:
        origins = tuple(ir.StringMatch(kind="exact", value=o) for o in c.allow_origin)
    return ir.Cors(
        allow_origins=origins,
        allow_methods=c.allow_methods,
        allow_headers=c.allow_headers,
        expose_headers=c.expose_headers,
        max_age_s=round(parse_ms(c.max_age)) // 1000 if c.max_age else None,
        allow_credentials=c.allow_credentials,
        forward_unmatched_preflights=c.unmatched_preflights != "IGNORE",
    )


def redirect(rd: h.HTTPRedirect) -> ir.Redirect:
    return ir.Redirect(
        scheme=rd.scheme or None,
        authority=rd.authority or None,
        port=rd.port,
        derive_port=rd.derive_port,
        path=rd.uri or None,
        prefix_rewrite=rd.prefix_rewrite or None,
        code=rd.redirect_code or 301,
    )


def direct_response(d: h.HTTPDirectResponse) -> ir.DirectResponse:
    body: bytes | None = None
    if d.body is not None and d.body.text is not None:
        body = d.body.text.encode()
    elif d.body is not None and d.body.data is not None:
        body = base64.b64decode(d.body.data, validate=True)
    return ir.DirectResponse(status=d.status, body=body)


def rewrite(rw: h.HTTPRewrite | None, header_authority: str | None) -> ir.Rewrite | None:
    uri = authority = None
    regex = None
    if rw is not None:
        uri = rw.uri or None
        authority = rw.authority or None
        if rw.uri_regex_rewrite is not None:
            rr = rw.uri_regex_rewrite
            regex = ir.RegexRewrite(pattern=rr.match, substitution=rr.rewrite)
    authority = authority or header_authority or None
    if uri is None and authority is None and regex is None:
        return None
    return ir.Rewrite(uri=uri, authority=authority, regex=regex)


def weighted(
    routes: Iterable[h.HTTPRouteDestination | r.RouteDestination], dest: DestFn
) -> tuple[ir.WeightedCluster, ...]:
    """One destination gets 100 whatever its weight; with more, weight-0 ones are left out."""
    dests = list(routes)
    out = []
    for d in dests:
        if len(dests) > 1 and not d.weight:
            continue
        headers = d.headers if isinstance(d, h.HTTPRouteDestination) else None
        req, _ = header_ops(headers.request if headers else None, request=True)
        resp, _ = header_ops(headers.response if headers else None, request=False)
        out.append(
            ir.WeightedCluster(
                cluster=dest(d.destination),
                weight=100 if len(dests) == 1 else d.weight or 0,
                request_headers=req,
                response_headers=resp,
            )
        )
    return tuple(out)


def route_action(http: h.HTTPRoute, dest: DestFn) -> ir.RouteAction:
    headers = http.headers
    req, authority = header_ops(headers.request if headers else None, request=True)
    resp, _ = header_ops(headers.response if headers else None, request=False)
    common = ir.RouteAction(request_headers=req, response_headers=resp, cors=cors(http.cors_policy))
    if http.redirect is not None:
        return _replace(common, redirect=redirect(http.redirect))
    if http.direct_response is not None:
        return _replace(common, direct_response=direct_response(http.direct_response))
    return _replace(
        common,
        clusters=weighted(http.route, dest),
        timeout_ms=_ms(http.timeout),
        rewrite=rewrite(http.rewrite, authority),
        retry=retry_policy(http.retries),
        fault=fault(http.fault),
        mirrors=mirrors(http, dest),
    )


def _replace(action: ir.RouteAction, **changes: object) -> ir.RouteAction:
    return msgspec.structs.replace(action, **changes)


def http_routes(vs: r.VirtualService, port: int, dest: DestFn, proxy: Proxy) -> list[ir.Route]:
    """One route per ``match`` entry of each rule, in order, up to the first catch-all.

    Matches for another ``port`` are skipped, and so are matches that do not :func:`apply
    <applies>` to ``proxy``; a rule whose matches are all skipped has no route (it does not
    become a catch-all).  The rules of one entry share one action.
    """
    routes: list[ir.Route] = []
    ns = vs.metadata.namespace
    for i, http in enumerate(vs.spec.http):
        name = http.name or f"{vs.metadata.name}.{i}"
        action = route_action(http, dest)
        for m in http.match or (None,):
            if m is not None and m.port is not None and m.port != port:
                continue
            if m is not None and not applies(m, ns, proxy):
                continue
            rm = route_match(m)
            prefix = m.stat_prefix if m is not None else None
            routes.append(ir.Route(name=name, match_=rm, action=action, stat_prefix=prefix))
            if catch_all(rm):
                return routes
    return routes
