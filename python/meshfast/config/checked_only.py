"""Istio kinds meshfast checks but does not serve yet: their Structs and semantic checks.

A document of one of these kinds is checked like any other (unknown fields, types, enums,
Istio's CRD rules and the webhook's), then reported as ``KIND is not implemented yet``: it
never reaches the compiler.  Serving one means moving its Struct to
:mod:`meshfast.config.resources`.

The rules and messages follow Istio's CRD schemas (``x-kubernetes-validations``) and its
webhook (pkg/config/validation), as ISTIO-API.md describes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from meshfast.config import duration
from meshfast.config.load import child
from meshfast.config.policy_target import (
    PolicyTargetReference,
    WorkloadSelector,
    selector_problems,
    targets,
)
from meshfast.config.resources import ObjectMeta
from meshfast.config.structs import IstioStruct, Percentage

Issue = tuple[str, str]

SECURITY_VERSIONS = frozenset({"security.istio.io/v1", "security.istio.io/v1beta1"})
TELEMETRY_VERSIONS = frozenset({"telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"})

# --- PeerAuthentication -------------------------------------------------------------------

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTLS(IstioStruct, frozen=True):
    mode: MtlsMode | None = None


class PeerAuthenticationSpec(IstioStruct, frozen=True):
    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    # Kubernetes reads an unquoted `8080:` key as the string "8080": both are accepted.
    port_level_mtls: dict[str | int, MutualTLS] | None = None


class PeerAuthentication(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: PeerAuthenticationSpec = PeerAuthenticationSpec()
    status: Any = None


def peer_authentication(pa: PeerAuthentication) -> Iterator[Issue]:
    spec = pa.spec
    yield from selector_problems(spec.selector, "$.spec.selector")
    if spec.port_level_mtls is None:
        return
    if not spec.port_level_mtls:
        yield "$.spec.portLevelMtls", "must have at least one port"
    if spec.selector is None or not spec.selector.match_labels:
        yield "$.spec.portLevelMtls", "portLevelMtls requires a selector with matchLabels"
    for port in spec.port_level_mtls:
        key = str(port)
        p = child("$.spec.portLevelMtls", key)
        if not key.isdigit():
            yield p, f'port "{key}" is not a number'
        elif not 1 <= int(key) <= 65535:
            yield p, f"port must be between 1 and 65535, got {key}"


# --- Telemetry ----------------------------------------------------------------------------

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
WorkloadMode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]
MetricName = Literal[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
]


class ProviderRef(IstioStruct, frozen=True):
    name: NonEmpty


class ModeSelector(IstioStruct, frozen=True):
    mode: WorkloadMode | None = None


class MetricSelector(IstioStruct, frozen=True):
    metric: MetricName | None = None
    custom_metric: NonEmpty | None = None
    mode: WorkloadMode | None = None


class TagOverride(IstioStruct, frozen=True):
    operation: Literal["UPSERT", "REMOVE"] | None = None
    value: str | None = None


class MetricsOverrides(IstioStruct, frozen=True):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = {}


class Metrics(IstioStruct, frozen=True):
    providers: tuple[ProviderRef, ...] = ()
    overrides: tuple[MetricsOverrides, ...] = ()
    reporting_interval: str | None = None


class Filter(IstioStruct, frozen=True):
    expression: str = ""


class AccessLogging(IstioStruct, frozen=True):
    match: ModeSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    disabled: bool | None = None
    filter: Filter | None = None


class LiteralValue(IstioStruct, frozen=True):
    value: NonEmpty


class Environment(IstioStruct, frozen=True):
    name: NonEmpty
    default_value: str = ""


class RequestHeader(IstioStruct, frozen=True):
    name: NonEmpty
    default_value: str = ""


class CustomTag(IstioStruct, frozen=True):
    literal: LiteralValue | None = None
    environment: Environment | None = None
    header: RequestHeader | None = None
    formatter: LiteralValue | None = None


class Tracing(IstioStruct, frozen=True):
    match: ModeSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    random_sampling_percentage: Percentage | None = None
    disable_span_reporting: bool | None = None
    disable_context_propagation: bool | None = None
    enable_istio_tags: bool | None = None
    use_request_id_for_trace_sampling: bool | None = None
    custom_tags: dict[str, CustomTag] = {}


class TelemetrySpec(IstioStruct, frozen=True):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    tracing: tuple[Tracing, ...] = ()
    metrics: tuple[Metrics, ...] = ()
    access_logging: tuple[AccessLogging, ...] = ()


class Telemetry(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: TelemetrySpec = TelemetrySpec()
    status: Any = None


def telemetry(t: Telemetry) -> Iterator[Issue]:
    spec = t.spec
    yield from targets(spec.selector, spec.target_ref, spec.target_refs)
    for i, m in enumerate(spec.metrics):
        p = f"$.spec.metrics[{i}]"
        if m.reporting_interval is not None:
            yield from duration.problems(m.reporting_interval, f"{p}.reportingInterval")
        for j, o in enumerate(m.overrides):
            op = f"{p}.overrides[{j}]"
            if o.match is not None and o.match.metric is not None and o.match.custom_metric:
                yield f"{op}.match", "only one of metric or customMetric can be set"
            for name, tag in o.tag_overrides.items():
                tp = child(f"{op}.tagOverrides", name)
                if tag.operation == "UPSERT" and not tag.value:
                    yield tp, "value must be set when operation is UPSERT"
                if tag.operation == "REMOVE" and tag.value is not None:
                    yield f"{tp}.value", "value must not be set when operation is REMOVE"
    for i, tr in enumerate(spec.tracing):
        for name, custom in tr.custom_tags.items():
            kinds = (custom.literal, custom.environment, custom.header, custom.formatter)
            if sum(x is not None for x in kinds) != 1:
                yield (
                    child(f"$.spec.tracing[{i}].customTags", name),
                    "exactly one of literal, environment, header or formatter is required",
                )


# --- RequestAuthentication ----------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")


class JWTHeader(IstioStruct, frozen=True):
    name: NonEmpty
    prefix: str = ""


class ClaimToHeader(IstioStruct, frozen=True):
    header: NonEmpty
    claim: NonEmpty


class JWTRule(IstioStruct, frozen=True):
    issuer: NonEmpty | None = None
    audiences: tuple[NonEmpty, ...] = ()
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: tuple[JWTHeader, ...] = ()
    from_params: tuple[NonEmpty, ...] = ()
    from_cookies: tuple[NonEmpty, ...] = ()
    output_payload_to_header: str | None = None
    forward_original_token: bool | None = None
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    space_delimited_claims: tuple[NonEmpty, ...] = ()
    timeout: str | None = None
    presence: Literal["OPTIONAL", "REQUIRED"] | None = None


class RequestAuthenticationSpec(IstioStruct, frozen=True):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    jwt_rules: tuple[JWTRule, ...] = ()


class RequestAuthentication(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: RequestAuthenticationSpec = RequestAuthenticationSpec()
    status: Any = None


def request_authentication(ra: RequestAuthentication) -> Iterator[Issue]:
    spec = ra.spec
    yield from targets(spec.selector, spec.target_ref, spec.target_refs)
    for i, rule in enumerate(spec.jwt_rules):
        p = f"$.spec.jwtRules[{i}]"
        if rule.issuer is None:
            yield p, 'missing required field "issuer"'
        if rule.jwks_uri is not None and rule.jwks is not None:
            yield p, "only one of jwks or jwksUri can be set"
        if rule.jwks_uri is not None:
            uri = rule.jwks_uri
            if not 1 <= len(uri) <= 2048:
                yield f"{p}.jwksUri", "must be 1 to 2048 characters long"
            elif urlsplit(uri).scheme.lower() not in ("http", "https"):
                yield f"{p}.jwksUri", f'"{uri}": the url must have scheme http:// or https://'
        if len(rule.space_delimited_claims) > 64:
            yield f"{p}.spaceDelimitedClaims", "at most 64 claims"
        for j, out in enumerate(rule.output_claim_to_headers):
            if not _HEADER_NAME.match(out.header):
                yield (
                    f"{p}.outputClaimToHeaders[{j}].header",
                    f'"{out.header}" is not a header name (letters, digits, "-" and "_")',
                )
        if rule.timeout is not None:
            yield from duration.problems(rule.timeout, f"{p}.timeout")


# --- the table validate uses --------------------------------------------------------------

CHECKED_ONLY: dict[str, tuple[type[Any], frozenset[str], Any]] = {
    "PeerAuthentication": (PeerAuthentication, SECURITY_VERSIONS, peer_authentication),
    "RequestAuthentication": (RequestAuthentication, SECURITY_VERSIONS, request_authentication),
    "Telemetry": (Telemetry, TELEMETRY_VERSIONS, telemetry),
}
