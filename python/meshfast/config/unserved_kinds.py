"""The rest of Istio's kinds, checked against their CRD rules and never served: WorkloadGroup,
ProxyConfig, WasmPlugin, TrafficExtension, EnvoyFilter.

Like :mod:`meshfast.config.checked_only` (with the selector and targetRef checks of
:mod:`meshfast.config.policy_target`): a document of
one of these kinds is checked field by field, then reported as not implemented.  Three of
them configure Envoy itself (EnvoyFilter patches its xDS, WasmPlugin and TrafficExtension
load Envoy Wasm or Lua code) and have no meaning for meshfast beyond being valid Istio.  The
rules are the CRD schemas' (../shared/istio-api), messages in Istio's words where it has them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec

from meshfast.config.policy_target import (
    Issue,
    PolicyTargetReference,
    WorkloadSelector,
    target_ref_problems,
)
from meshfast.config.policy_target import selector_problems as _selector
from meshfast.config.resources import NETWORKING_VERSIONS, ObjectMeta
from meshfast.config.structs import IstioStruct

Port = Annotated[int, msgspec.Meta(ge=0, le=4294967295)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
NonNegative32 = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]

_PORT_NAME = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_SHA256 = re.compile(r"^$|^[a-f0-9]{64}$")


def _targets(
    selector: WorkloadSelector | None, refs: tuple[PolicyTargetReference, ...] | None, sel: str
) -> Iterator[Issue]:
    if selector is not None and refs is not None:
        yield "$.spec", f"only one of {sel} or targetRefs can be set"
    if refs is not None:
        if len(refs) > 16:
            yield "$.spec.targetRefs", "at most 16 targetRefs"
        for i, ref in enumerate(refs):
            yield from target_ref_problems(ref, f"$.spec.targetRefs[{i}]")


def _port(value: int, path: str) -> Iterator[Issue]:
    if not 0 < value <= 65535:
        yield path, "port must be between 1-65535"


# --- WorkloadGroup ------------------------------------------------------------------------


class GroupMetadata(IstioStruct, frozen=True):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class WorkloadTemplate(IstioStruct, frozen=True):
    address: str | None = None
    ports: dict[str, Port] | None = None
    labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: Port | None = None
    service_account: str | None = None


class HTTPHeader(IstioStruct, frozen=True):
    name: str = ""
    value: str = ""


class HTTPGetAction(IstioStruct, frozen=True):
    port: Port
    path: str = ""
    host: str = ""
    scheme: str = ""
    http_headers: tuple[HTTPHeader, ...] = ()


class TCPSocketAction(IstioStruct, frozen=True):
    port: Port
    host: str = ""


class ExecAction(IstioStruct, frozen=True):
    command: tuple[str, ...]


class GrpcAction(IstioStruct, frozen=True):
    port: Port = 0
    service: str = ""


class ReadinessProbe(IstioStruct, frozen=True):
    initial_delay_seconds: NonNegative32 = 0
    timeout_seconds: NonNegative32 = 0
    period_seconds: NonNegative32 = 0
    success_threshold: NonNegative32 = 0
    failure_threshold: NonNegative32 = 0
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    grpc: GrpcAction | None = None


class WorkloadGroupSpec(IstioStruct, frozen=True):
    template: WorkloadTemplate
    metadata: GroupMetadata | None = None
    probe: ReadinessProbe | None = None


class WorkloadGroup(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: WorkloadGroupSpec
    status: Any = None


def workload_group(wg: WorkloadGroup) -> Iterator[Issue]:
    t, path = wg.spec.template, "$.spec.template"
    if t.address is not None:
        if len(t.address) > 256:
            yield f"{path}.address", "address must be at most 256 characters long"
        if t.address.startswith("unix://"):
            if t.address[7:8] not in ("/", "@"):
                yield f"{path}.address", "UDS must be an absolute path or abstract socket"
            elif t.address.endswith("/"):
                yield f"{path}.address", "UDS may not be a dir"
            if t.ports is not None:
                yield f"{path}.ports", "UDS may not include ports"
    for name in t.ports or {}:
        if len(name) >= 63 or not _PORT_NAME.match(name):
            yield f"{path}.ports", f'"{name}" is not a valid port name'
    if wg.spec.metadata is not None and len(wg.spec.metadata.labels) > 256:
        yield "$.spec.metadata.labels", "at most 256 labels"
    probe = wg.spec.probe
    if probe is None:
        return
    kinds = [probe.http_get, probe.tcp_socket, probe.exec, probe.grpc]
    if sum(k is not None for k in kinds) > 1:
        yield "$.spec.probe", "only one of httpGet, tcpSocket, exec or grpc can be set"
    if probe.http_get is not None:
        g = probe.http_get
        yield from _port(g.port, "$.spec.probe.httpGet.port")
        if g.scheme not in ("", "HTTP", "HTTPS"):
            yield "$.spec.probe.httpGet.scheme", f'"{g.scheme}": must be HTTP or HTTPS'
        for i, h in enumerate(g.http_headers):
            if not _HEADER_NAME.match(h.name):
                yield f"$.spec.probe.httpGet.httpHeaders[{i}].name", f'"{h.name}": invalid name'
    if probe.tcp_socket is not None:
        yield from _port(probe.tcp_socket.port, "$.spec.probe.tcpSocket.port")
    if probe.grpc is not None:
        yield from _port(probe.grpc.port, "$.spec.probe.grpc.port")


# --- ProxyConfig --------------------------------------------------------------------------


class ProxyImage(IstioStruct, frozen=True):
    image_type: str = ""


class ProxyConfigSpec(IstioStruct, frozen=True):
    selector: WorkloadSelector | None = None
    concurrency: NonNegative32 | None = None
    environment_variables: dict[str, str] = {}
    image: ProxyImage | None = None


class ProxyConfig(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: ProxyConfigSpec = ProxyConfigSpec()
    status: Any = None


def proxy_config(pc: ProxyConfig) -> Iterator[Issue]:
    yield from _selector(pc.spec.selector, "$.spec.selector")


# --- WasmPlugin ---------------------------------------------------------------------------


class PortSelector(IstioStruct, frozen=True):
    number: Port


class TrafficSelector(IstioStruct, frozen=True):
    mode: Literal["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"] | None = None
    ports: tuple[PortSelector, ...] = ()


class EnvVar(IstioStruct, frozen=True):
    name: str
    value: str | None = None
    value_from: Literal["INLINE", "HOST"] | None = None


class VmConfig(IstioStruct, frozen=True):
    env: tuple[EnvVar, ...] = ()


class WasmConfig(IstioStruct, frozen=True):
    """A Wasm module (WasmPlugin's fields; TrafficExtension's ``wasm``)."""

    url: str
    sha256: str = ""
    image_pull_policy: Literal["UNSPECIFIED_POLICY", "IfNotPresent", "Always"] | None = None
    image_pull_secret: str | None = None
    verification_key: str | None = None
    plugin_config: dict[str, Any] | None = None
    plugin_name: str | None = None
    fail_strategy: Literal["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"] | None = None
    vm_config: VmConfig | None = None
    type: Literal["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"] | None = None


class WasmPluginSpec(WasmConfig, frozen=True):
    """A WasmPlugin: its module, and where and when it runs."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    phase: Literal["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"] | None = None
    priority: Int32 | None = None
    match: tuple[TrafficSelector, ...] = ()


class WasmPlugin(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: WasmPluginSpec
    status: Any = None


_URL_SCHEMES = ("http://", "https://", "oci://", "file://")


def wasm_plugin(wp: WasmPlugin) -> Iterator[Issue]:
    s = wp.spec
    if (s.selector is not None) + (s.target_ref is not None) + (s.target_refs is not None) > 1:
        yield "$.spec", "only one of selector, targetRef or targetRefs can be set"
    yield from _selector(s.selector, "$.spec.selector")
    if s.target_ref is not None:
        yield from target_ref_problems(s.target_ref, "$.spec.targetRef")
    yield from _targets(None, s.target_refs, "selector")
    yield from _wasm(s, "$.spec")
    for i, m in enumerate(s.match):
        for j, port in enumerate(m.ports):
            yield from _port(port.number, f"$.spec.match[{i}].ports[{j}].number")


def _wasm(s: WasmConfig, path: str) -> Iterator[Issue]:
    """The Wasm module's fields, shared by WasmPlugin and TrafficExtension."""
    if not s.url:
        yield f"{path}.url", "url must not be empty"
    elif "://" in s.url and not s.url.startswith(_URL_SCHEMES):
        yield f"{path}.url", "url must have schema one of [http, https, file, oci]"
    if not _SHA256.match(s.sha256):
        yield f"{path}.sha256", "sha256 must be 64 lowercase hex characters"
    if s.image_pull_secret is not None and not 1 <= len(s.image_pull_secret) <= 253:
        yield f"{path}.imagePullSecret", "must be 1 to 253 characters long"
    if s.plugin_name is not None and not 1 <= len(s.plugin_name) <= 256:
        yield f"{path}.pluginName", "must be 1 to 256 characters long"
    env = s.vm_config.env if s.vm_config is not None else ()
    if len(env) > 256:
        yield f"{path}.vmConfig.env", "at most 256 variables"
    for i, var in enumerate(env):
        p = f"{path}.vmConfig.env[{i}]"
        if not 1 <= len(var.name) <= 256:
            yield f"{p}.name", "must be 1 to 256 characters long"
        if var.value_from == "HOST" and var.value is not None:
            yield f"{p}.value", "value may only be set when valueFrom is INLINE"
        if var.value is not None and len(var.value) > 2048:
            yield f"{p}.value", "must be at most 2048 characters long"


# --- TrafficExtension ---------------------------------------------------------------------


class LuaConfig(IstioStruct, frozen=True):
    inline_code: str


class TrafficExtensionSpec(IstioStruct, frozen=True):
    selector: WorkloadSelector | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    phase: Literal["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"] | None = None
    priority: Int32 | None = None
    match: tuple[TrafficSelector, ...] = ()
    wasm: WasmConfig | None = None
    lua: LuaConfig | None = None


class TrafficExtension(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: TrafficExtensionSpec = TrafficExtensionSpec()
    status: Any = None


def traffic_extension(te: TrafficExtension) -> Iterator[Issue]:
    s = te.spec
    if s.selector is not None and s.target_refs is not None:
        yield "$.spec", "only one of targetRefs or selector can be set"
    yield from _selector(s.selector, "$.spec.selector")
    yield from _targets(None, s.target_refs, "selector")
    if (s.wasm is None) == (s.lua is None):
        yield "$.spec", "exactly one of wasm or lua must be set"
    if s.wasm is not None:
        yield from _wasm(s.wasm, "$.spec.wasm")
    if s.lua is not None and not 1 <= len(s.lua.inline_code) <= 65536:
        yield "$.spec.lua.inlineCode", "must be 1 to 65536 characters long"
    for i, m in enumerate(s.match):
        for j, port in enumerate(m.ports):
            yield from _port(port.number, f"$.spec.match[{i}].ports[{j}].number")


# --- EnvoyFilter --------------------------------------------------------------------------


class SubFilterMatch(IstioStruct, frozen=True):
    name: str = ""


class FilterMatch(IstioStruct, frozen=True):
    name: str = ""
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(IstioStruct, frozen=True):
    name: str = ""
    sni: str = ""
    transport_protocol: str = ""
    application_protocols: str = ""
    filter: FilterMatch | None = None
    destination_port: Port = 0


class ListenerMatch(IstioStruct, frozen=True):
    port_number: Port = 0
    port_name: str = ""
    filter_chain: FilterChainMatch | None = None
    listener_filter: str = ""
    name: str = ""


class RouteMatch(IstioStruct, frozen=True):
    name: str = ""
    action: Literal["ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"] | None = None


class VirtualHostMatch(IstioStruct, frozen=True):
    name: str = ""
    domain_name: str = ""
    route: RouteMatch | None = None


class RouteConfigurationMatch(IstioStruct, frozen=True):
    port_number: Port = 0
    port_name: str = ""
    gateway: str = ""
    vhost: VirtualHostMatch | None = None
    name: str = ""


class ClusterMatch(IstioStruct, frozen=True):
    port_number: Port = 0
    service: str = ""
    subset: str = ""
    name: str = ""


class WaypointRouteMatch(IstioStruct, frozen=True):
    name: str = ""


class WaypointMatch(IstioStruct, frozen=True):
    filter: FilterMatch | None = None
    route: WaypointRouteMatch | None = None
    port_number: Port = 0


class ProxyMatch(IstioStruct, frozen=True):
    proxy_version: str = ""
    metadata: dict[str, str] = {}


Context = Literal["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"]


class ObjectMatch(IstioStruct, frozen=True):
    context: Context | None = None
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None
    waypoint: WaypointMatch | None = None


class Patch(IstioStruct, frozen=True):
    operation: (
        Literal[
            "INVALID",
            "MERGE",
            "ADD",
            "REMOVE",
            "INSERT_BEFORE",
            "INSERT_AFTER",
            "INSERT_FIRST",
            "REPLACE",
            "MERGE_AND_REPLACE_LIST",
        ]
        | None
    ) = None
    value: dict[str, Any] | None = None
    filter_class: Literal["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"] | None = None


ApplyTo = Literal[
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
]


class ConfigPatch(IstioStruct, frozen=True):
    apply_to: ApplyTo | None = None
    match: ObjectMatch | None = None
    patch: Patch | None = None


class EnvoyFilterSelector(IstioStruct, frozen=True):
    labels: dict[str, str] = {}


class EnvoyFilterSpec(IstioStruct, frozen=True):
    workload_selector: EnvoyFilterSelector | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    config_patches: tuple[ConfigPatch, ...] = ()
    priority: Int32 | None = None


class EnvoyFilter(IstioStruct, frozen=True):
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: EnvoyFilterSpec = EnvoyFilterSpec()
    status: Any = None


def envoy_filter(ef: EnvoyFilter) -> Iterator[Issue]:
    s = ef.spec
    yield from _targets(s.workload_selector, s.target_refs, "workloadSelector")  # type: ignore[arg-type]
    if s.workload_selector is not None and len(s.workload_selector.labels) > 256:
        yield "$.spec.workloadSelector.labels", "at most 256 labels"
    for i, cp in enumerate(s.config_patches):
        p = f"$.spec.configPatches[{i}]"
        m = cp.match
        if m is None:
            continue
        objects = [m.listener, m.route_configuration, m.cluster, m.waypoint]
        if sum(o is not None for o in objects) > 1:
            yield (
                f"{p}.match",
                ("only one of listener, routeConfiguration, cluster or waypoint can be set"),
            )
        if (m.waypoint is not None) != (m.context == "WAYPOINT"):
            yield f"{p}.match", "waypoint must be set if and only if context is WAYPOINT"
        if m.waypoint is not None and m.waypoint.port_number:
            yield from _port(m.waypoint.port_number, f"{p}.match.waypoint.portNumber")


ISTIO_VERSIONS: dict[str, frozenset[str]] = {
    "WorkloadGroup": NETWORKING_VERSIONS,
    "ProxyConfig": frozenset({"networking.istio.io/v1beta1"}),
    "WasmPlugin": frozenset({"extensions.istio.io/v1alpha1"}),
    "TrafficExtension": frozenset({"extensions.istio.io/v1alpha1"}),
    "EnvoyFilter": frozenset({"networking.istio.io/v1alpha3"}),
}

UNSERVED: dict[str, tuple[type[Any], frozenset[str], Any]] = {
    "WorkloadGroup": (WorkloadGroup, ISTIO_VERSIONS["WorkloadGroup"], workload_group),
    "ProxyConfig": (ProxyConfig, ISTIO_VERSIONS["ProxyConfig"], proxy_config),
    "WasmPlugin": (WasmPlugin, ISTIO_VERSIONS["WasmPlugin"], wasm_plugin),
    "TrafficExtension": (
        TrafficExtension,
        ISTIO_VERSIONS["TrafficExtension"],
        traffic_extension,
    ),
    "EnvoyFilter": (EnvoyFilter, ISTIO_VERSIONS["EnvoyFilter"], envoy_filter),
}
