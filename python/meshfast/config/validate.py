"""Validation: every problem of every document, at once, with its file, line and field path.

1. Structure: a generic walker over ``msgspec.inspect.type_info`` checks each document against
   its Struct (unknown / not-implemented / missing fields, wrong types, bad enum values,
   out-of-range integers).  Only documents without structural problems are decoded.
2. Semantics, per resource: weights, regexes, StringMatch oneofs, durations, hosts, ports,
   traffic policies (:mod:`meshfast.config.validate_policy`)...
3. Across resources: duplicates, delegate VirtualServices (:mod:`meshfast.config.delegate`:
   missing, not a delegate, not exported, conflicting matches), TCP services that would need
   the same listener port, Gateway servers on one port that would need different listeners.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from meshfast.config import analyze, duration, failure_rate, load_balancer
from meshfast.config import authorization_policy as authz_policy
from meshfast.config import checked_only as co
from meshfast.config import delegate as dg
from meshfast.config import registry as reg
from meshfast.config import resources as r
from meshfast.config import unserved_kinds as uk
from meshfast.config import validate_gateway as vg
from meshfast.config import validate_http as vh
from meshfast.config import validate_policy as vp
from meshfast.config.http_filter import MAX_FILTER_TIMEOUT_MS, FilterLoader, parse_target
from meshfast.config.load import Document, LoadError, child, parse_text, read_paths
from meshfast.config.model import Config, ConfigError, Problem
from meshfast.config.unsupported import Unsupported

Issue = tuple[str, str]  # (JSON path, message)

_KNOWN_PROTOCOLS = frozenset(
    {"HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS"}
)
GATEWAY_API = "gateway.networking.k8s.io"
_INBOUND_ENDPOINT = re.compile(r"^(127\.0\.0\.1|0\.0\.0\.0|\[::1\]|localhost):(\d{1,5})$")


# --- the structural walker ----------------------------------------------------------------


def _what(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expected(t: mi.Type) -> str:
    if isinstance(t, mi.BoolType):
        return "a boolean"
    if isinstance(t, mi.IntType):
        return "an integer"
    if isinstance(t, mi.FloatType):
        return "a number"
    if isinstance(t, mi.StrType | mi.LiteralType):
        return "a string"
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return "a list"
    if isinstance(t, mi.DictType | mi.StructType):
        return "a mapping"
    if isinstance(t, mi.NoneType):
        return "null"
    return "a value"


def _accepts(value: object, t: mi.Type) -> bool:
    """Whether ``value``'s Python type is the right shape for ``t`` (values not checked)."""
    if isinstance(t, mi.AnyType):
        return True
    if isinstance(t, mi.NoneType):
        return value is None
    if isinstance(t, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(t, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(t, mi.FloatType):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(t, mi.StrType):
        return isinstance(value, str)
    if isinstance(t, mi.LiteralType):
        return any(type(v) is type(value) for v in t.values)
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return isinstance(value, list)
    if isinstance(t, mi.DictType | mi.StructType):
        return isinstance(value, dict)
    return False


def _range(value: float, t: mi.IntType | mi.FloatType) -> str | None:
    lo = t.ge if t.ge is not None else t.gt
    hi = t.le if t.le is not None else t.lt
    bad = (
        (t.ge is not None and value < t.ge)
        or (t.gt is not None and value <= t.gt)
        or (t.le is not None and value > t.le)
        or (t.lt is not None and value >= t.lt)
    )
    if not bad:
        return None
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}, got {value}"
    if lo is not None:
        return f"must be >= {lo}, got {value}"
    return f"must be <= {hi}, got {value}"


def check(value: object, t: mi.Type, path: str, out: list[Issue], drop: Drop | None = None) -> None:
    """Append to ``out`` every structural problem of ``value`` against type ``t``; unknown
    keys also to ``drop``, so that the rest can still be decoded and checked.

    A field meshfast does not implement yet is not dropped that way: the rest of the
    document may mean something else without it (a Gateway's ``credentialName`` stands for
    its ``caCertificates``), so its document is not decoded."""
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.UnionType):
        options = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if value is None and len(options) < len(t.types):
            return
        for option in options:
            if _accepts(value, option):
                check(value, option, path, out, drop)
                return
        wanted = " or ".join(dict.fromkeys(_expected(x) for x in options))
        out.append((path, f"expected {wanted}, got {_what(value)}"))
        return
    if not _accepts(value, t):
        out.append((path, f"expected {_expected(t)}, got {_what(value)}"))
        return
    if isinstance(t, mi.IntType | mi.FloatType):
        assert isinstance(value, int | float)
        msg = _range(value, t)
        if msg:
            out.append((path, msg))
    elif isinstance(t, mi.LiteralType):
        if value not in t.values:
            choices = ", ".join(str(v) for v in t.values)
            out.append((path, f"must be one of {choices}; got {value!r}"))
    elif isinstance(t, mi.StrType):
        assert isinstance(value, str)
        if t.min_length is not None and len(value) < t.min_length:
            out.append((path, f"must be at least {t.min_length} characters long"))
    elif isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        assert isinstance(value, list)
        for i, item in enumerate(value):
            check(item, t.item_type, child(path, i), out, drop)
    elif isinstance(t, mi.DictType):
        assert isinstance(value, dict)
        for k, v in value.items():
            p = child(path, k)
            if isinstance(t.key_type, mi.StrType) and not isinstance(k, str):
                out.append((p, f"keys must be strings, got {_what(k)}"))
                continue
            check(v, t.value_type, p, out, drop)
    elif isinstance(t, mi.StructType):
        assert isinstance(value, dict)
        fields = {f.encode_name: f for f in t.fields}
        not_implemented: frozenset[str] = getattr(t.cls, "NOT_IMPLEMENTED", frozenset())
        for k, v in value.items():
            p = child(path, k)
            f = fields.get(k) if isinstance(k, str) else None
            if f is not None:
                check(v, f.type, p, out, drop)
                continue
            if k in not_implemented:
                out.append((p, Unsupported("not implemented yet")))
                if drop is not None:
                    drop.add((id(value), None))  # not decodable
            elif t.forbid_unknown_fields:
                out.append((p, f'unknown field "{k}"'))
                if drop is not None:
                    drop.add((id(value), k))
        out.extend(
            (path, f'missing required field "{f.encode_name}"')
            for f in t.fields
            if f.required and f.encode_name not in value
        )


# (id of a mapping, key): fields the decoder is not given; key None: not decodable.
Drop = set[tuple[int, object]]


def _without(value: object, drop: Drop) -> object:
    """``value`` without the fields in ``drop`` (a copy of what changes)."""
    if isinstance(value, dict):
        return {k: _without(v, drop) for k, v in value.items() if (id(value), k) not in drop}
    if isinstance(value, list):
        return [_without(v, drop) for v in value]
    return value


def _convert(data: object, cls: type[Any], drop: Drop, namespace: str | None = None) -> Any:
    """The resource of ``data`` without its unknown fields (so that they do not hide the
    rest's problems), in ``namespace`` if it names none; None when a field not implemented
    yet is in it, or when what is left cannot be decoded either."""
    if any(k is None for _, k in drop):
        return None
    if drop:
        data = _without(data, drop)
    meta = data.get("metadata") if isinstance(data, dict) else None
    if namespace is not None and isinstance(meta, dict) and meta.get("namespace") is None:
        data = {**data, "metadata": {**meta, "namespace": namespace}}  # type: ignore[dict-item]
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError:
        return None


_TYPE_INFO: dict[type[Any], mi.Type] = {}


def _type_info(cls: type[Any]) -> mi.Type:
    if cls not in _TYPE_INFO:
        _TYPE_INFO[cls] = mi.type_info(cls)
    return _TYPE_INFO[cls]


# --- semantic checks ----------------------------------------------------------------------


def _virtual_service(vs: r.VirtualService) -> Iterator[Issue]:
    spec = vs.spec
    if not spec.hosts:
        # No hosts: a delegate, only used through a root rule's http[].delegate.
        for key, items in (("gateways", spec.gateways), ("tls", spec.tls), ("tcp", spec.tcp)):
            if items:
                yield f"$.spec.{key}", f"a delegate VirtualService (no hosts) cannot have {key}"
        for i, http in enumerate(spec.http):
            if http.delegate is not None:
                yield (
                    f"$.spec.http[{i}].delegate",
                    "a delegate VirtualService (no hosts) cannot delegate again (one level only)",
                )
    for i, h in enumerate(spec.hosts):
        if not h.strip():
            yield f"$.spec.hosts[{i}]", "host must not be empty"
    yield from vg.virtual_service(vs)
    for i, http in enumerate(spec.http):
        yield from vh.http_route(http, f"$.spec.http[{i}]")
    for i, tcp in enumerate(spec.tcp):
        tp = f"$.spec.tcp[{i}]"
        if not tcp.route:
            yield tp, "route is required"
        yield from vh.weights(tcp.route, f"{tp}.route")


def _destination_rule(dr: r.DestinationRule) -> Iterator[Issue]:
    if not dr.spec.host.strip():
        yield "$.spec.host", "host must not be empty"
    yield from failure_rate.problems(dr.metadata.annotations)
    yield from load_balancer.problems(dr.metadata.annotations)
    yield from vp.traffic_policy(dr.spec.traffic_policy, "$.spec.trafficPolicy")
    seen: set[str] = set()
    for i, s in enumerate(dr.spec.subsets):
        p = f"$.spec.subsets[{i}]"
        if not vh.DNS_LABEL.match(s.name):
            yield f"{p}.name", f'subset name "{s.name}" is not a valid DNS label'
        if s.name in seen:
            yield f"{p}.name", f'duplicate subset "{s.name}"'
        seen.add(s.name)
        yield from vp.traffic_policy(s.traffic_policy, f"{p}.trafficPolicy")


def _protocol(protocol: str | None, path: str) -> Iterator[Issue]:
    if protocol is not None and protocol.upper() not in _KNOWN_PROTOCOLS:
        known = ", ".join(sorted(_KNOWN_PROTOCOLS))
        yield path, f'unknown protocol "{protocol}" (one of {known})'


# Kubernetes port names (Istio's CRD rule for WorkloadEntry ``ports{}`` keys).
_PORT_NAME = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")


def _endpoint(ep: r.WorkloadEntrySpec, path: str) -> Iterator[Issue]:
    """A WorkloadEntry spec or a ServiceEntry endpoint, by Istio's CRD rules."""
    address = ep.address
    if not address:
        if ep.network is None:
            yield path, 'missing required field "address" (or "network")'
        else:
            yield (
                f"{path}.network",
                Unsupported(
                    "an endpoint without address (reached through its network's gateway)"
                    " is not implemented yet"
                ),
            )
    elif address.startswith("unix://"):
        socket = address[len("unix://") :]
        uds_ok = True
        if not socket.startswith(("/", "@")):
            uds_ok = False
            yield f"{path}.address", f'"{address}": UDS must be an absolute path or abstract socket'
        elif socket.endswith("/"):
            uds_ok = False
            yield f"{path}.address", f'"{address}": UDS may not be a dir'
        if ep.ports:
            uds_ok = False
            yield f"{path}.ports", "UDS may not include ports"
        if uds_ok:
            uds = Unsupported("unix domain socket endpoints are not implemented yet")
            yield f"{path}.address", uds
    for name in ep.ports:
        if len(name) >= 63 or not _PORT_NAME.match(name):
            yield (
                child(f"{path}.ports", name),
                f'port name "{name}" must be at most 62 letters, digits and "-",'
                " starting and ending with a letter or digit",
            )


def _service_entry(se: r.ServiceEntry) -> Iterator[Issue]:
    spec = se.spec
    if not spec.hosts:
        yield "$.spec.hosts", "at least one host is required"
    for i, h in enumerate(spec.hosts):
        if not h.strip():
            yield f"$.spec.hosts[{i}]", "host must not be empty"
        elif h.strip() == "*":
            yield f"$.spec.hosts[{i}]", 'the host "*" is not allowed'
    seen: set[int] = set()
    names: set[str] = set()
    for i, port in enumerate(spec.ports):
        if port.number in seen:
            yield f"$.spec.ports[{i}].number", f"duplicate port {port.number}"
        seen.add(port.number)
        if port.name is not None:
            if port.name in names:
                yield f"$.spec.ports[{i}].name", f'duplicate port name "{port.name}"'
            names.add(port.name)
        yield from _protocol(port.protocol, f"$.spec.ports[{i}].protocol")
    resolution = spec.resolution or "NONE"
    if resolution not in ("NONE", "STATIC"):
        for i, a in enumerate(spec.addresses):
            if "/" in a:
                yield (
                    f"$.spec.addresses[{i}]",
                    f'CIDR address "{a}" is allowed only with resolution NONE or STATIC'
                    f" (resolution is {resolution})",
                )
    if resolution == "NONE" and spec.endpoints:
        yield "$.spec.endpoints", "resolution NONE cannot have endpoints (use STATIC or DNS)"
    if resolution == "DNS_ROUND_ROBIN" and len(spec.endpoints) > 1:
        yield "$.spec.endpoints[1]", "resolution DNS_ROUND_ROBIN allows at most one endpoint"
    if spec.workload_selector is not None:
        for k, val in spec.workload_selector.labels.items():
            if "*" in val:
                yield (
                    child("$.spec.workloadSelector.labels", k),
                    f'"{val}": a wildcard is not supported in a selector',
                )
    if resolution == "DYNAMIC_DNS":
        yield "$.spec.resolution", Unsupported("DYNAMIC_DNS is not implemented yet")
    has_endpoints = bool(spec.endpoints) or spec.workload_selector is not None
    if spec.endpoints and spec.workload_selector is not None:
        yield "$.spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive"
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not has_endpoints:
        for i, h in enumerate(spec.hosts):
            if h.strip().startswith("*"):
                yield f"$.spec.hosts[{i}]", "a wildcard host with DNS resolution needs endpoints"
    for i, ep in enumerate(spec.endpoints):
        p = f"$.spec.endpoints[{i}]"
        yield from _endpoint(ep, p)
        static = resolution == "STATIC" and not ep.address.startswith("unix://")
        if static and ep.address and not reg.ip_literal(ep.address):
            yield f"{p}.address", f'"{ep.address}" is not an IP address (resolution STATIC)'


def _workload_entry(we: r.WorkloadEntry) -> Iterator[Issue]:
    yield from _endpoint(we.spec, "$.spec")


def _sidecar(sc: r.Sidecar) -> Iterator[Issue]:
    for i, ing in enumerate(sc.spec.ingress):
        p = f"$.spec.ingress[{i}]"
        if ing.port.number is None:
            yield f"{p}.port", 'missing required field "number"'
        yield from _protocol(ing.port.protocol, f"{p}.port.protocol")
        if ing.default_endpoint is None:
            yield p, Unsupported("ingress without defaultEndpoint is not implemented yet")
        elif ing.default_endpoint.startswith("unix://"):
            yield (
                f"{p}.defaultEndpoint",
                Unsupported("unix domain socket endpoints are not implemented yet"),
            )
        elif not _INBOUND_ENDPOINT.match(ing.default_endpoint):
            yield (
                f"{p}.defaultEndpoint",
                f'"{ing.default_endpoint}" must be 127.0.0.1:PORT, [::1]:PORT or 0.0.0.0:PORT',
            )
    for i, eg in enumerate(sc.spec.egress):
        if not eg.hosts:
            yield f"$.spec.egress[{i}].hosts", "at least one host is required"
        for j, h in enumerate(eg.hosts):
            ns, slash, host = h.partition("/")
            if not slash or not ns or not host:
                yield f"$.spec.egress[{i}].hosts[{j}]", f'"{h}" must be namespace/dnsName'


def _service(svc: r.Service) -> Iterator[Issue]:
    for i, port in enumerate(svc.spec.ports):
        if isinstance(port.target_port, str):
            yield (
                f"$.spec.ports[{i}].targetPort",
                Unsupported(
                    f'named targetPort "{port.target_port}" is not implemented yet; use a number'
                ),
            )
        elif port.target_port is not None and not 1 <= port.target_port <= 65535:
            yield (
                f"$.spec.ports[{i}].targetPort",
                f"must be between 1 and 65535, got {port.target_port}",
            )


def _endpoint_slice(sl: r.EndpointSlice) -> Iterator[Issue]:
    if "kubernetes.io/service-name" not in sl.metadata.labels:
        yield "$.metadata.labels", 'missing label "kubernetes.io/service-name"'


def _http_filter(f: r.HttpFilter) -> Iterator[Issue]:
    if parse_target(f.spec.python) is None:
        yield "$.spec.python", f'"{f.spec.python}" must be "module:Class"'
    for i, h in enumerate(f.spec.hosts):
        if not h.strip():
            yield f"$.spec.hosts[{i}]", "host must not be empty"
    if f.spec.route is not None and not f.spec.route:
        yield "$.spec.route", "route must not be empty"
    if f.spec.timeout is not None:
        found = list(duration.problems(f.spec.timeout, "$.spec.timeout", whole_ms=True))
        yield from found
        if not found and duration.parse_ms(f.spec.timeout) > MAX_FILTER_TIMEOUT_MS:
            yield "$.spec.timeout", f'timeout "{f.spec.timeout}" must be at most 10m'


def _load_filters(
    origins: dict[tuple[str, str, str], tuple[Document, r.Resource]],
    problems: list[Problem],
    load_filter: FilterLoader | None,
) -> dict[tuple[str, str], Any]:
    """Every HttpFilter's instance, built by ``load_filter`` (none without one); what it
    reports is placed at its line like the validator's own problems."""
    loaded: dict[tuple[str, str], Any] = {}
    if load_filter is None:
        return loaded
    for doc, res in origins.values():
        if not isinstance(res, r.HttpFilter):
            continue
        ns, name = res.metadata.namespace, res.metadata.name
        instance, issues = load_filter(res, doc.file)
        problems.extend(
            Problem(doc.file, doc.line_of(p), "HttpFilter", name, p, m) for p, m in issues
        )
        if instance is not None:
            loaded[(ns, name)] = instance
    return loaded


_SEMANTIC: dict[type[Any], Any] = {
    r.VirtualService: _virtual_service,
    r.DestinationRule: _destination_rule,
    r.ServiceEntry: _service_entry,
    r.WorkloadEntry: _workload_entry,
    r.Sidecar: _sidecar,
    r.Service: _service,
    r.EndpointSlice: _endpoint_slice,
    r.Gateway: vg.gateway,
    r.HttpFilter: _http_filter,
    r.AuthorizationPolicy: lambda ap: authz_policy.problems(ap.spec),
}


def checks_kind(kind: str) -> bool:
    """Whether ``validate`` checks the fields of ``kind`` (served, or checked only)."""
    return kind in r.KINDS or kind in co.CHECKED_ONLY or kind in uk.UNSERVED


# --- the pipeline -------------------------------------------------------------------------


def _name_of(data: object) -> tuple[str, str]:
    if not isinstance(data, dict):
        return "-", "-"
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return (
        kind if isinstance(kind, str) and kind else "-",
        name if isinstance(name, str) and name else "-",
    )


def _api_version(api_version: object, kind: str, versions: frozenset[str]) -> list[Issue]:
    if api_version is None or api_version in versions:
        return []
    return [
        (
            "$.apiVersion",
            f'apiVersion "{api_version}" is not supported for {kind}'
            f" (use {', '.join(sorted(versions))})",
        )
    ]


def _decode(doc: Document, namespace: str) -> tuple[r.Resource | None, list[Issue]]:
    data = doc.data
    issues: list[Issue] = list(doc.problems)
    if not isinstance(data, dict):
        return None, [*issues, ("$", f"a resource must be a mapping, got {_what(data)}")]
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        issues.append(("$", 'missing required field "kind"'))
        return None, issues
    checked_only = co.CHECKED_ONLY.get(kind) or uk.UNSERVED.get(kind)
    drop: Drop = set()
    if checked_only is not None:
        # Checked like the others, never served: "not implemented yet" whatever else is found.
        cls, versions, semantic = checked_only
        issues.append(("$.kind", Unsupported(f"{kind} is not implemented yet")))
        issues.extend(_api_version(data.get("apiVersion"), kind, versions))
        check(data, _type_info(cls), "$", issues, drop)
        checked = _convert(data, cls, drop)
        if checked is not None:
            issues.extend(semantic(checked))
        return None, issues
    entry = r.KINDS.get(kind)
    if entry is None:
        if kind in r.ISTIO_KINDS_NOT_IMPLEMENTED:
            issues.append(("$.kind", Unsupported(f"{kind} is not implemented yet")))
        else:
            issues.append(("$.kind", f"{kind} is not supported"))
        return None, issues
    cls, versions = entry
    api = data.get("apiVersion")
    if isinstance(api, str) and api.startswith(f"{GATEWAY_API}/"):
        # The Kubernetes Gateway API's own Gateway: another kind under the same name.
        issues.append(("$.kind", Unsupported(f"{kind} of {api} is not implemented yet")))
        return None, issues
    issues.extend(_api_version(api, kind, versions))
    check(data, _type_info(cls), "$", issues, drop)
    # Decoded even with unknown fields (left out), so that every problem of the document is
    # reported at once, not the first layer's only.
    resource: r.Resource | None = _convert(data, cls, drop, namespace)
    if resource is not None:
        issues.extend(_SEMANTIC[cls](resource))
    return resource, issues


def _validate(
    docs: list[Document],
    errors: list[LoadError],
    files: list[str],
    namespace: str,
    load_filter: FilterLoader | None = None,
    *,
    istio: bool = False,
) -> Config:
    problems = [Problem(e.file, e.line, "-", "-", "$", e.message) for e in errors]
    resources: list[r.Resource] = []
    origins: dict[tuple[str, str, str], tuple[Document, r.Resource]] = {}
    for doc in docs:
        kind, name = _name_of(doc.data)
        resource, issues = _decode(doc, namespace)
        problems.extend(Problem(doc.file, doc.line_of(p), kind, name, p, m) for p, m in issues)
        # One with only what meshfast does not serve yet still takes part in the checks
        # across resources: `validate --istio` judges the whole as Istio would.
        if resource is None or not all(isinstance(m, Unsupported) for _, m in issues):
            continue
        key = (kind, resource.metadata.namespace, resource.metadata.name)
        first = origins.get(key)
        if first is not None:
            where = f"{first[0].file}:{first[0].line}"
            problems.append(
                Problem(
                    doc.file,
                    doc.line_of("$.metadata.name"),
                    kind,
                    name,
                    "$.metadata.name",
                    f"duplicate {kind} {key[1]}/{key[2]} (first defined at {where})",
                )
            )
            continue
        origins[key] = (doc, resource)
        resources.append(resource)

    # Delegates: every root rule's delegate must exist and merge without conflicts.
    vss = [res for res in resources if isinstance(res, r.VirtualService)]
    by_key = dg.index(vss)
    for vs in vss:
        doc = origins[("VirtualService", vs.metadata.namespace, vs.metadata.name)][0]
        problems.extend(
            Problem(doc.file, doc.line_of(p), "VirtualService", vs.metadata.name, p, m)
            for p, m in dg.problems(vs, by_key)
        )

    # TCP services are told apart by port only: two of them on one port would need one listener.
    # TLS/HTTPS ports are routed by SNI, so several of them may share a port.
    port_owner: dict[int, tuple[str, bool]] = {}
    for svc in reg.build_registry(resources).values():
        for port in svc.ports:
            if port.protocol != "tcp":
                continue
            other, other_tls = port_owner.setdefault(port.number, (svc.fqdn, port.tls))
            if other == svc.fqdn or (other_tls and port.tls):
                continue
            doc = origins[svc.origin][0]
            field = "number" if svc.origin[0] == "ServiceEntry" else "port"
            path = f"$.spec.ports[{port.index}].{field}"
            problems.append(
                Problem(
                    doc.file,
                    doc.line_of(path),
                    svc.origin[0],
                    svc.origin[2],
                    path,
                    Unsupported(
                        f"TCP port {port.number} of {svc.fqdn} beside {other}: TCP services"
                        " sharing a port (told apart by address) are not implemented yet"
                    ),
                )
            )

    problems.extend(
        vg.port_conflicts((doc, res) for doc, res in origins.values() if isinstance(res, r.Gateway))
    )
    problems.extend(analyze.warnings(origins))
    filters = _load_filters(origins, problems, load_filter)

    if istio:
        # Istio's validity alone: its kinds' errors; what meshfast does not serve yet and
        # the other kinds (a Deployment beside the Istio resources) are not its concern.
        problems = [p for p in problems if p.severity != "unsupported" and _istio_kind(p.kind)]
    order = {f: i for i, f in enumerate(dict.fromkeys([*files, *(p.file for p in problems)]))}
    problems.sort(key=lambda p: (order[p.file], p.line))
    if any(p.severity != "warning" for p in problems):
        raise ConfigError(problems)
    return Config(
        resources=resources,
        sources={key: doc.file for key, (doc, _) in origins.items()},
        filters=filters,
        warnings=problems,
    )


def _istio_kind(kind: str) -> bool:
    """An Istio kind, or a problem of no kind (YAML that does not parse)."""
    return kind in r.ISTIO_KINDS or kind == "-"


def load_config(
    paths: Sequence[str | Path],
    *,
    namespace: str = "default",
    texts: Sequence[tuple[str, str]] = (),
    load_filter: FilterLoader | None = None,
    istio: bool = False,
) -> Config:
    """Read and validate files and folders; raises ConfigError with every problem found.

    ``texts`` are (YAML text, source name) pairs read after the files, into the same config
    (``meshfast.Sidecar(config=..., yaml=...)``).  ``load_filter`` builds the instances of
    the HttpFilter resources (``Config.filters``; its problems are reported with the others);
    without it only their ``module:Class`` syntax is checked (``meshfast.deploy.load`` passes
    the filter registry's loader).

    Warnings (``Problem.severity``) do not raise: they are in ``Config.warnings``.
    ``istio``: Istio's validity alone (``validate --istio``): only errors of Istio kinds
    raise; what meshfast does not serve yet does not.
    """
    docs, errors, files = read_paths(paths)
    for text, source in texts:
        more, failed = parse_text(text, source)
        docs.extend(more)
        errors.extend(failed)
        files.append(source)
    return _validate(docs, errors, files, namespace, load_filter, istio=istio)


def load_config_text(
    text: str,
    *,
    source: str = "<body>",
    namespace: str = "default",
    load_filter: FilterLoader | None = None,
    istio: bool = False,
) -> Config:
    """Read and validate one multi-document YAML text (a ``POST /config`` body);
    ``load_filter`` and ``istio`` as in :func:`load_config`."""
    docs, errors = parse_text(text, source)
    return _validate(docs, errors, [source], namespace, load_filter, istio=istio)
