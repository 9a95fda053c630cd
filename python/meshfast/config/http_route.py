"""The VirtualService ``http[]`` types (and the StringMatch/Destination they share with ``tcp[]``).

Split out of :mod:`meshfast.config.resources`, which re-exports every name here.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from meshfast.config.structs import HttpStatus, Int32, IstioStruct, Percentage, Port, Weight

IntPercent = Annotated[int, msgspec.Meta(ge=0, le=100)]


class StringMatch(IstioStruct, frozen=True):
    """Exactly one of exact/prefix/regex; ``{}`` means presence in header/query maps."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class PortSelector(IstioStruct, frozen=True):
    number: Port | None = None


class Destination(IstioStruct, frozen=True):
    host: str
    subset: str | None = None
    port: PortSelector | None = None


class Percent(IstioStruct, frozen=True):
    """``{value: 12.5}``: a percentage with Istio's 1e-4 precision."""

    value: Percentage = 0.0


class HeaderOperations(IstioStruct, frozen=True):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: tuple[str, ...] = ()


class Headers(IstioStruct, frozen=True):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(IstioStruct, frozen=True):
    destination: Destination
    weight: Weight | None = None
    headers: Headers | None = None
    delegate: Delegate | None = None


class HTTPMatchRequest(IstioStruct, frozen=True):
    name: str | None = None
    stat_prefix: str | None = None  # the name this match's route counters go under
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    without_headers: dict[str, StringMatch] = {}
    query_params: dict[str, StringMatch] = {}
    port: Port | None = None
    ignore_uri_case: bool = False
    gateways: tuple[str, ...] = ()  # set: replaces the VirtualService's gateways for this match
    # Config-time: keep this match only on a proxy with these labels / in this namespace.
    source_labels: dict[str, str] = {}
    source_namespace: str | None = None


class HTTPRedirect(IstioStruct, frozen=True):
    uri: str | None = None
    authority: str | None = None
    port: Port | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: Int32 | None = None
    prefix_rewrite: str | None = None


class HTTPBody(IstioStruct, frozen=True):
    text: str | None = msgspec.field(default=None, name="string")
    data: str | None = msgspec.field(default=None, name="bytes")  # base64


class HTTPDirectResponse(IstioStruct, frozen=True):
    status: HttpStatus
    body: HTTPBody | None = None


class RegexRewrite(IstioStruct, frozen=True):
    match: str = ""
    rewrite: str = ""


class HTTPRewrite(IstioStruct, frozen=True):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(IstioStruct, frozen=True):
    attempts: Int32 = 0
    retry_remote_localities: bool | None = None  # retries may go to the next locality priority
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: str | None = None


class Delay(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"exponentialDelay"})

    fixed_delay: str | None = None
    percentage: Percent | None = None
    percent: IntPercent | None = None  # deprecated


class Abort(IstioStruct, frozen=True):
    NOT_IMPLEMENTED = frozenset({"http2Error"})

    http_status: HttpStatus | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(IstioStruct, frozen=True):
    delay: Delay | None = None
    abort: Abort | None = None


class HTTPMirrorPolicy(IstioStruct, frozen=True):
    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(IstioStruct, frozen=True):
    allow_origins: tuple[StringMatch, ...] = ()
    allow_origin: tuple[str, ...] = ()  # deprecated: exact strings
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: str | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class Delegate(IstioStruct, frozen=True):
    """``http[].delegate``: the VirtualService (empty ``hosts``) whose rules replace this one."""

    name: str
    namespace: str | None = None  # default: the root VirtualService's namespace


class HTTPRoute(IstioStruct, frozen=True):
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    mirror_percent: IntPercent | None = None  # deprecated
    mirror_percent_snake: IntPercent | None = msgspec.field(default=None, name="mirror_percent")
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None
    delegate: Delegate | None = None
