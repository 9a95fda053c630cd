"""Semantic checks of VirtualService routes (``http[]`` rules and route destinations).

Follows istiod's validation (``pkg/config/validation``): the conflicts between route, redirect,
directResponse, fault and rewrite; header names; retry conditions; fault codes; CORS methods.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Sequence
from http import HTTPStatus

from meshfast.config import http_route as h
from meshfast.config import resources as r
from meshfast.config.duration import parse_ms
from meshfast.config.duration import problems as duration_problems
from meshfast.config.load import child
from meshfast.config.routes import AUTHORITY_HEADERS, GRPC_STATUS, RETRY_ON
from meshfast.config.unsupported import Unsupported

Issue = tuple[str, str]  # (JSON path, message)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CORS_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"}
)
_MAX_BODY = 1024 * 1024


def regex(pattern: str, path: str) -> Iterator[Issue]:
    try:
        re.compile(pattern)
    except re.error as e:
        yield path, f"invalid regex {pattern!r}: {e}"


def string_match(m: h.StringMatch, path: str, *, presence_ok: bool = False) -> Iterator[Issue]:
    set_ = [k for k in ("exact", "prefix", "regex") if getattr(m, k) is not None]
    if not set_:
        if not presence_ok:
            yield path, "one of exact, prefix or regex is required"
        return
    if len(set_) > 1:
        yield path, f"only one of exact, prefix or regex may be set (got {', '.join(set_)})"
        return
    if m.regex is not None and not (presence_ok and m.regex == "*"):
        yield from regex(m.regex, child(path, "regex"))


def duration(text: str, path: str) -> Iterator[Issue]:
    yield from duration_problems(text, path)


def destination(d: h.Destination, path: str) -> Iterator[Issue]:
    if not d.host.strip():
        yield child(path, "host"), "host must not be empty"
    if d.subset is not None and not DNS_LABEL.match(d.subset):
        yield child(path, "subset"), f'subset "{d.subset}" is not a valid DNS label'


def weights(
    dests: Sequence[h.HTTPRouteDestination | r.RouteDestination], path: str
) -> Iterator[Issue]:
    for i, d in enumerate(dests):
        p = child(path, i)
        yield from destination(d.destination, child(p, "destination"))
        if isinstance(d, h.HTTPRouteDestination) and d.headers is not None:
            yield from headers(d.headers, child(p, "headers"), per_destination=True)
    if len(dests) > 1 and sum(d.weight or 0 for d in dests) <= 0:
        yield path, "with more than one destination the total weight must be > 0"


# --- headers ------------------------------------------------------------------------------


def _header_name(name: str, path: str, *, authority_ok: bool) -> Iterator[Issue]:
    if authority_ok and name.lower() in AUTHORITY_HEADERS:
        return
    if name.startswith(":") or name.lower() == "host":
        yield path, f'header "{name}" cannot be modified here'
    elif not _HEADER_NAME.match(name):
        yield path, f'"{name}" is not a valid header name'


def _header_ops(
    ops: h.HeaderOperations, path: str, *, request: bool, per_destination: bool
) -> Iterator[Issue]:
    for key in ("set", "add"):
        seen: set[str] = set()
        for name, value in getattr(ops, key).items():
            p = child(child(path, key), name)
            if request and name.lower() in AUTHORITY_HEADERS and per_destination:
                yield p, Unsupported("setting the authority per destination is not implemented yet")
                continue
            yield from _header_name(name, p, authority_ok=request)
            if name.lower() in seen:
                yield p, f'header "{name}" is given twice (names are case-insensitive)'
            seen.add(name.lower())
            if "%" in value.replace("%%", ""):
                yield (
                    p,
                    Unsupported(
                        "header value substitution (%...%) is not implemented yet;"
                        " write %% for a literal %"
                    ),
                )
    for i, name in enumerate(ops.remove):
        yield from _header_name(name, child(child(path, "remove"), i), authority_ok=False)


def headers(hs: h.Headers, path: str, *, per_destination: bool = False) -> Iterator[Issue]:
    if hs.request is not None:
        yield from _header_ops(
            hs.request, child(path, "request"), request=True, per_destination=per_destination
        )
    if hs.response is not None:
        yield from _header_ops(
            hs.response, child(path, "response"), request=False, per_destination=per_destination
        )


def _authorities(http: h.HTTPRoute, hp: str) -> Iterator[Issue]:
    """istiod's validateAuthorityRewrite: the authority may be rewritten in one place only."""
    given = []
    if http.rewrite is not None and http.rewrite.authority:
        given.append(f"{hp}.rewrite.authority")
    req = http.headers.request if http.headers is not None else None
    if req is not None:
        for key in ("set", "add"):
            given.extend(
                child(child(f"{hp}.headers.request", key), name)
                for name in getattr(req, key)
                if name.lower() in AUTHORITY_HEADERS
            )
    for p in given[1:]:
        yield p, "the authority is already rewritten (set it in one place only)"


# --- actions ------------------------------------------------------------------------------


def _redirect(rd: h.HTTPRedirect, path: str) -> Iterator[Issue]:
    if not (rd.uri or rd.prefix_rewrite or rd.authority or rd.scheme or rd.port or rd.derive_port):
        yield path, "redirect must set uri, prefixRewrite, authority, scheme, port or derivePort"
    if rd.uri and rd.prefix_rewrite is not None:
        yield f"{path}.prefixRewrite", "uri and prefixRewrite are mutually exclusive"
    if rd.port is not None and rd.derive_port is not None:
        yield f"{path}.derivePort", "port and derivePort are mutually exclusive"
    if rd.scheme is not None and rd.scheme not in ("http", "https"):
        yield f"{path}.scheme", f'scheme must be "http" or "https", got "{rd.scheme}"'
    if rd.redirect_code and rd.redirect_code not in _REDIRECT_CODES:
        codes = ", ".join(str(c) for c in sorted(_REDIRECT_CODES))
        yield f"{path}.redirectCode", f"{rd.redirect_code} is not a redirect code ({codes})"


def _direct_response(d: h.HTTPDirectResponse, path: str) -> Iterator[Issue]:
    body = d.body
    if body is None:
        return
    bp = f"{path}.body"
    if body.text is not None and body.data is not None:
        yield bp, "only one of string or bytes may be set"
        return
    size = len(body.text.encode()) if body.text is not None else 0
    if body.data is not None:
        try:
            size = len(base64.b64decode(body.data, validate=True))
        except (binascii.Error, ValueError):
            yield f"{bp}.bytes", "bytes must be base64"
            return
    if size > _MAX_BODY:
        yield bp, f"the body is {size} bytes; the limit is 1MB"


def _rewrite(rw: h.HTTPRewrite, path: str) -> Iterator[Issue]:
    rr = rw.uri_regex_rewrite
    if rw.uri and rr is not None:
        yield path, "uri and uriRegexRewrite are mutually exclusive"
    if not (rw.uri or rw.authority or rr is not None):
        yield path, "rewrite must set uri, authority or uriRegexRewrite"
    if rr is not None:
        rp = f"{path}.uriRegexRewrite"
        if not rr.match or not rr.rewrite:
            yield rp, "match and rewrite are both required"
        if rr.match:
            yield from regex(rr.match, f"{rp}.match")


def _retries(rt: h.HTTPRetry, path: str) -> Iterator[Issue]:
    if rt.attempts == 0 and (rt.per_try_timeout is not None or rt.retry_on):
        yield path, "perTryTimeout and retryOn need attempts > 0 (attempts 0 disables retries)"
    if rt.per_try_timeout is not None:
        yield from duration(rt.per_try_timeout, f"{path}.perTryTimeout")
    if rt.backoff is not None:
        yield from duration(rt.backoff, f"{path}.backoff")
    if rt.retry_on:
        for part in (p.strip() for p in rt.retry_on.split(",")):
            if part in RETRY_ON or (part.isdigit() and int(part) in HTTPStatus._value2member_map_):
                continue
            yield f"{path}.retryOn", f'"{part}" is not a retry condition Envoy knows'


def _fault(f: h.HTTPFaultInjection, path: str) -> Iterator[Issue]:
    if f.delay is None and f.abort is None:
        yield path, "a fault needs a delay, an abort or both"
    if f.delay is not None:
        if f.delay.fixed_delay is None:
            yield f"{path}.delay", 'missing required field "fixedDelay"'
        else:
            yield from duration(f.delay.fixed_delay, f"{path}.delay.fixedDelay")
    a = f.abort
    if a is not None:
        if a.http_status is None and a.grpc_status is None:
            yield f"{path}.abort", "one of httpStatus or grpcStatus is required"
        elif a.http_status is not None and a.grpc_status is not None:
            yield f"{path}.abort", "only one of httpStatus or grpcStatus may be set"
        if a.grpc_status is not None and a.grpc_status not in GRPC_STATUS:
            yield (
                f"{path}.abort.grpcStatus",
                f'"{a.grpc_status}" is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND)',
            )


def _mirrors(http: h.HTTPRoute, hp: str) -> Iterator[Issue]:
    if http.mirror is not None:
        if http.mirrors:
            yield f"{hp}.mirrors", "mirror and mirrors are mutually exclusive"
        yield from destination(http.mirror, f"{hp}.mirror")
    if http.mirror_percent is not None and http.mirror_percent_snake is not None:
        yield f"{hp}.mirror_percent", "mirrorPercent is already set"
    for i, m in enumerate(http.mirrors):
        yield from destination(m.destination, f"{hp}.mirrors[{i}].destination")


def _cors(c: h.CorsPolicy, path: str) -> Iterator[Issue]:
    for i, o in enumerate(c.allow_origins):
        p = f"{path}.allowOrigins[{i}]"
        if not (o.exact or o.prefix or o.regex):
            yield p, "a non-empty exact, prefix or regex is required"
        else:
            yield from string_match(o, p)
    for i, m in enumerate(c.allow_methods):
        if m not in _CORS_METHODS:
            yield f"{path}.allowMethods[{i}]", f'"{m}" is not an HTTP method'
    for key in ("allowHeaders", "exposeHeaders"):
        names = c.allow_headers if key == "allowHeaders" else c.expose_headers
        for i, name in enumerate(names):
            if name != "*" and not _HEADER_NAME.match(name):
                yield f"{path}.{key}[{i}]", f'"{name}" is not a valid header name'
    if c.max_age is not None:
        issues = list(duration(c.max_age, f"{path}.maxAge"))
        yield from issues
        if not issues and parse_ms(c.max_age) % 1000:
            yield f"{path}.maxAge", f'maxAge "{c.max_age}" must be whole seconds'


# --- one http[] rule ----------------------------------------------------------------------


def http_route(http: h.HTTPRoute, hp: str) -> Iterator[Issue]:
    kinds = [
        k
        for k, v in (
            ("route", http.route),
            ("redirect", http.redirect),
            ("directResponse", http.direct_response),
            ("delegate", http.delegate),
        )
        if v
    ]
    if not kinds:
        yield hp, "one of route, redirect, directResponse or delegate is required"
    elif len(kinds) > 1:
        yield (
            hp,
            "only one of route, redirect, directResponse or delegate may be set"
            f" (got {', '.join(kinds)})",
        )
    if http.delegate is not None and not http.delegate.name.strip():
        yield f"{hp}.delegate.name", "name must not be empty"
    if http.redirect is not None or http.direct_response is not None:
        local = "redirect" if http.redirect is not None else "directResponse"
        if http.fault is not None:
            yield f"{hp}.fault", f"fault cannot be used with {local}"
        if http.rewrite is not None:
            yield f"{hp}.rewrite", f"rewrite cannot be used with {local}"

    yield from weights(http.route, f"{hp}.route")
    if http.timeout is not None:
        yield from duration(http.timeout, f"{hp}.timeout")
    for j, m in enumerate(http.match):
        yield from _match(m, f"{hp}.match[{j}]")
    if http.headers is not None:
        yield from headers(http.headers, f"{hp}.headers")
    yield from _authorities(http, hp)
    if http.redirect is not None:
        yield from _redirect(http.redirect, f"{hp}.redirect")
    if http.direct_response is not None:
        yield from _direct_response(http.direct_response, f"{hp}.directResponse")
    if http.rewrite is not None:
        yield from _rewrite(http.rewrite, f"{hp}.rewrite")
    if http.retries is not None:
        yield from _retries(http.retries, f"{hp}.retries")
    if http.fault is not None:
        yield from _fault(http.fault, f"{hp}.fault")
    yield from _mirrors(http, hp)
    if http.cors_policy is not None:
        yield from _cors(http.cors_policy, f"{hp}.corsPolicy")


def _match(m: h.HTTPMatchRequest, mp: str) -> Iterator[Issue]:
    for key in ("uri", "scheme", "method", "authority"):
        sm = getattr(m, key)
        if sm is not None:
            yield from string_match(sm, child(mp, key))
    for key, attr in (("headers", "headers"), ("withoutHeaders", "without_headers")):
        for name, sm in getattr(m, attr).items():
            p = child(child(mp, key), name)
            if name != name.lower():
                yield p, f'header name "{name}" must be lowercase'
            yield from string_match(sm, p, presence_ok=True)
    for name, sm in m.query_params.items():
        yield from string_match(sm, child(child(mp, "queryParams"), name), presence_ok=True)
