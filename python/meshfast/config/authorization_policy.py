"""AuthorizationPolicy's spec (``security.istio.io``) and the checks Istio's CRD schema and
webhook make of it (pkg/config/validation), with meshfast's own: CUSTOM is not served yet.

The resource itself is :class:`meshfast.config.resources.AuthorizationPolicy`; what it
compiles to is :mod:`meshfast.config.authz`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Literal

import msgspec

from meshfast.config.policy_target import PolicyTargetReference, WorkloadSelector, targets
from meshfast.config.structs import IstioStruct
from meshfast.config.unsupported import Unsupported

Issue = tuple[str, str]

# `when` keys (Istio's pilot/pkg/security/authz/model): exact names, and prefixes of keyed ones.
KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "source.trustDomain",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_KEYED = re.compile(r"^(request\.headers|request\.auth\.claims)(\[[^\[\]]+\])+$")


def known_key(key: str) -> bool:
    return key in KEYS or bool(_KEYED.match(key)) or key.startswith("experimental.envoy.filters.")


def _condition_values(key: str, values: tuple[str, ...], path: str) -> Iterator[Issue]:
    for i, v in enumerate(values):
        if key in ("source.ip", "remote.ip", "destination.ip"):
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                yield f"{path}[{i}]", f'"{v}" is not an IP address or CIDR'
        elif key == "destination.port" and (not v.isdigit() or int(v) > 65535):
            yield f"{path}[{i}]", f'"{v}" is not a port number (0 to 65535)'


class Source(IstioStruct, frozen=True):
    principals: tuple[str, ...] | None = None
    not_principals: tuple[str, ...] | None = None
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None
    not_namespaces: tuple[str, ...] | None = None
    service_accounts: tuple[str, ...] | None = None
    not_service_accounts: tuple[str, ...] | None = None
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()


class Operation(IstioStruct, frozen=True):
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class RuleFrom(IstioStruct, frozen=True):
    source: Source | None = None


class RuleTo(IstioStruct, frozen=True):
    operation: Operation | None = None


class Condition(IstioStruct, frozen=True):
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


class Rule(IstioStruct, frozen=True):
    from_: tuple[RuleFrom, ...] = msgspec.field(default=(), name="from")
    to: tuple[RuleTo, ...] = ()
    when: tuple[Condition, ...] = ()


class ExtensionProvider(IstioStruct, frozen=True):
    name: str = ""


class AuthorizationPolicySpec(IstioStruct, frozen=True):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] | None = None
    provider: ExtensionProvider | None = None
    rules: tuple[Rule, ...] | None = None


def _ip_blocks(blocks: tuple[str, ...], path: str) -> Iterator[Issue]:
    for i, block in enumerate(blocks):
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            yield f"{path}[{i}]", f'"{block}" is not an IP address or CIDR'


def _source(s: Source, path: str) -> Iterator[Issue]:
    if s == Source():
        yield path, "source must not be empty"
    accounts = s.service_accounts is not None or s.not_service_accounts is not None
    others = (s.principals, s.not_principals, s.namespaces, s.not_namespaces)
    if accounts and any(x is not None for x in others):
        yield path, "cannot set serviceAccounts with namespaces or principals"
    for key, items in (
        ("serviceAccounts", s.service_accounts),
        ("notServiceAccounts", s.not_service_accounts),
    ):
        if items is None:
            continue
        if len(items) > 16:
            yield f"{path}.{key}", "at most 16 service accounts"
        for i, item in enumerate(items):
            if len(item) > 320:
                yield f"{path}.{key}[{i}]", "must be at most 320 characters long"
    for key, blocks in (
        ("ipBlocks", s.ip_blocks),
        ("notIpBlocks", s.not_ip_blocks),
        ("remoteIpBlocks", s.remote_ip_blocks),
        ("notRemoteIpBlocks", s.not_remote_ip_blocks),
    ):
        yield from _ip_blocks(blocks, f"{path}.{key}")


def _operation(op: Operation, path: str) -> Iterator[Issue]:
    if op == Operation():
        yield path, "operation must not be empty"
    for key, ports in (("ports", op.ports), ("notPorts", op.not_ports)):
        for i, port in enumerate(ports):
            if not port.isdigit() or int(port) > 65535:
                yield f"{path}.{key}[{i}]", f'"{port}" is not a port number (0 to 65535)'


def problems(spec: AuthorizationPolicySpec) -> Iterator[Issue]:
    """Istio's CRD and webhook checks, and what meshfast does not serve yet (CUSTOM)."""
    yield from targets(spec.selector, spec.target_ref, spec.target_refs)
    if spec.action == "CUSTOM":
        yield (
            "$.spec.action",
            Unsupported(
                "CUSTOM (an external authorizer) is not implemented yet: use ALLOW, DENY or AUDIT"
            ),
        )
        if spec.provider is None or not spec.provider.name:
            yield "$.spec.provider", "a CUSTOM action needs provider.name"
        if spec.rules is None:
            yield "$.spec", "a CUSTOM action without rules never applies (add an empty rule {})"
    elif spec.provider is not None:
        yield (
            "$.spec.provider",
            f"provider is only for the CUSTOM action, not {spec.action or 'ALLOW'}",
        )
    for i, rule in enumerate(spec.rules or ()):
        p = f"$.spec.rules[{i}]"
        for j, f in enumerate(rule.from_):
            if f.source is None:
                yield f"{p}.from[{j}]", 'missing required field "source"'
            else:
                yield from _source(f.source, f"{p}.from[{j}].source")
        for j, t in enumerate(rule.to):
            if t.operation is None:
                yield f"{p}.to[{j}]", 'missing required field "operation"'
            else:
                yield from _operation(t.operation, f"{p}.to[{j}].operation")
        for j, c in enumerate(rule.when):
            if not c.key:
                yield f"{p}.when[{j}].key", "key must not be empty"
            elif not known_key(c.key):
                yield f"{p}.when[{j}].key", f'"{c.key}": unknown attribute'
            if not c.values and not c.not_values:
                yield f"{p}.when[{j}]", f'"{c.key}": values or notValues is required'
            for key, values in (("values", c.values), ("notValues", c.not_values)):
                yield from _condition_values(c.key, values, f"{p}.when[{j}].{key}")
