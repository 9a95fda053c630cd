"""Which workloads a security or telemetry policy names: ``selector.matchLabels``, or
``targetRef``/``targetRefs`` (gateways, waypoints), as Istio's CRDs check them."""

from __future__ import annotations

import re
from collections.abc import Iterator

from meshfast.config.load import child
from meshfast.config.structs import IstioStruct

Issue = tuple[str, str]

_GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")


class WorkloadSelector(IstioStruct, frozen=True):
    match_labels: dict[str, str] = {}


class PolicyTargetReference(IstioStruct, frozen=True):
    kind: str
    name: str
    group: str = ""
    namespace: str = ""


def selector_problems(selector: WorkloadSelector | None, path: str) -> Iterator[Issue]:
    if selector is None:
        return
    for key, value in selector.match_labels.items():
        p = child(f"{path}.matchLabels", key)
        if not key:
            yield p, "a label key must not be empty"
        elif "*" in key:
            yield p, f'"{key}": a wildcard is not allowed in a label key'
        if "*" in value:
            yield p, f'"{value}": a wildcard is not allowed in a label value'
        elif len(value) > 63:
            yield p, "a label value must be at most 63 characters long"


def target_ref_problems(ref: PolicyTargetReference, path: str) -> Iterator[Issue]:
    if not ref.kind or not _KIND.match(ref.kind) or len(ref.kind) > 63:
        yield f"{path}.kind", f'"{ref.kind}" is not a valid kind'
    if not _GROUP.match(ref.group) or len(ref.group) > 253:
        yield f"{path}.group", f'"{ref.group}" is not a valid group'
    if not ref.name or len(ref.name) > 253:
        yield f"{path}.name", "name must be 1 to 253 characters long"
    if ref.namespace:
        yield f"{path}.namespace", "cross namespace referencing is not supported"


def targets(
    selector: WorkloadSelector | None,
    target_ref: PolicyTargetReference | None,
    target_refs: tuple[PolicyTargetReference, ...] | None,
) -> Iterator[Issue]:
    if (selector is not None) + (target_ref is not None) + (target_refs is not None) > 1:
        yield "$.spec", "only one of selector, targetRef or targetRefs can be set"
    yield from selector_problems(selector, "$.spec.selector")
    if target_ref is not None:
        yield from target_ref_problems(target_ref, "$.spec.targetRef")
    if target_refs is not None:
        if len(target_refs) > 16:
            yield "$.spec.targetRefs", "at most 16 targetRefs"
        for i, ref in enumerate(target_refs):
            yield from target_ref_problems(ref, f"$.spec.targetRefs[{i}]")
