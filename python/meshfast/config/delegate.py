"""Delegate VirtualServices: ``http[].delegate`` merged into the root VirtualService.

A *delegate* VirtualService has no ``hosts``; it never routes on its own.  A *root* rule (an
``http[]`` entry with ``delegate: {name, namespace}`` and no route, redirect or
directResponse) is replaced, in place, by the delegate's ``http[]`` rules, each merged with it
(istiod's ``mergeHTTPRoutes``).  One level only: a delegate's own rules cannot delegate.

Lookup: ``namespace`` defaults to the root's namespace.  The delegate must exist, have no
hosts, and be exported to the root's namespace (its ``exportTo`` empty, ``*``, ``.`` from its
own namespace, or naming the root's namespace).  Otherwise validation reports a problem
(istiod would drop the root rule and log a warning).

Merging one delegate rule D with the root rule R:

* Matches: R without matches → D's matches; D without matches → R's matches; otherwise every
  match d of D is combined with every match r of R that it does not conflict with, in the
  order (d, r).  A match d compatible with no r makes D *conflict*: istiod drops D, meshfast
  reports a problem.
* Two matches conflict (istiod's ``hasConflict``) when, for ``uri``, ``scheme``, ``method``,
  ``authority`` and each header / withoutHeader / queryParam key both set:

  - either side is a regex (and the two are not identical);
  - r is ``exact: X`` and d is not ``exact: X``;
  - r is ``prefix: P`` and d's prefix or exact value does not start with ``P``;
  - r is a presence match (``{}``) and d is not the same presence match;

  or ``ignoreUriCase`` differs, or both set different ``port``\\ s, or both set ``gateways`` and
  d's are not a subset of r's, or both set different ``sourceNamespace``\\ s, or both set one
  ``sourceLabels`` key to different values.  Identical StringMatches never conflict (istiod
  reports two presence matches as a conflict; meshfast does not).
* A combined match is d with what d leaves unset taken from r: ``uri`` (so the root's prefix
  is kept unless the delegate gives a longer one that starts with it, or an exact path under
  it), ``scheme``, ``method``, ``authority``, ``port``, ``gateways``, ``sourceNamespace``;
  ``headers``, ``withoutHeaders``, ``queryParams`` and ``sourceLabels`` are the union (d's
  value for a key in both, which cannot conflict); ``name`` is ``r-d`` (or whichever is set).
* The rule: D with ``rewrite``, ``timeout``, ``retries``, ``fault``, ``mirror``,
  ``mirrorPercentage``, ``mirrorPercent``, ``mirrors``, ``corsPolicy`` and ``headers`` taken
  from R where D leaves them unset (whole blocks, not merged field by field); ``name`` is
  ``R-D`` (or whichever is set; both unset: ``<delegate name>.<index>``).
* Destinations of the merged rules are resolved in the **root's** namespace, as istiod does
  (it resolves short names after merging): write FQDNs in delegates of another namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from meshfast.config import http_route as h
from meshfast.config import resources as r

Key = tuple[str, str]  # (namespace, name)


def is_delegate(vs: r.VirtualService) -> bool:
    """A VirtualService without hosts: only usable as a delegate."""
    return not vs.spec.hosts


def index(vss: Iterable[r.VirtualService]) -> dict[Key, r.VirtualService]:
    """Every VirtualService by (namespace, name)."""
    return {(vs.metadata.namespace, vs.metadata.name): vs for vs in vss}


def target(root: r.VirtualService, ref: h.Delegate) -> Key:
    return (ref.namespace or root.metadata.namespace, ref.name)


def _exported(delegate: r.VirtualService, namespace: str) -> bool:
    own = delegate.metadata.namespace
    to = delegate.spec.export_to
    return not to or any(e == "*" or e == namespace or (e == "." and own == namespace) for e in to)


def lookup(
    root: r.VirtualService, ref: h.Delegate, vss: dict[Key, r.VirtualService]
) -> tuple[r.VirtualService | None, str | None]:
    """The delegate a root rule names, or why it cannot be used."""
    ns, name = target(root, ref)
    found = vss.get((ns, name))
    if found is None:
        return None, f"delegate VirtualService {ns}/{name} not found"
    if not is_delegate(found):
        return None, f"VirtualService {ns}/{name} has hosts, so it cannot be a delegate"
    if not _exported(found, root.metadata.namespace):
        return None, (
            f"delegate VirtualService {ns}/{name} is not exported to namespace"
            f" {root.metadata.namespace}"
        )
    return found, None


# --- matches ------------------------------------------------------------------------------


def _describe(m: h.StringMatch) -> str:
    for kind in ("exact", "prefix", "regex"):
        value = getattr(m, kind)
        if value is not None:
            return f'{kind} "{value}"'
    return "presence"


def string_conflict(root: h.StringMatch | None, leaf: h.StringMatch | None) -> bool:
    """Whether ``leaf`` is not a refinement of ``root`` (istiod's ``stringMatchConflict``)."""
    if root is None or leaf is None or root == leaf:
        return False
    if root.regex is not None or leaf.regex is not None:
        return True
    if root.exact is not None:
        return leaf.exact != root.exact
    if root.prefix is not None:
        value = leaf.prefix if leaf.prefix is not None else leaf.exact
        return value is None or not value.startswith(root.prefix)
    return True  # root is a presence match, leaf is not the same presence match


def conflict(root: h.HTTPMatchRequest, leaf: h.HTTPMatchRequest) -> str | None:
    """Why ``leaf`` (a delegate's match) cannot refine ``root`` (the root rule's), or None."""
    for field in ("uri", "scheme", "method", "authority"):
        a, b = getattr(root, field), getattr(leaf, field)
        if string_conflict(a, b):
            return f"{field} {_describe(b)} is not within {_describe(a)}"
    for field, attr in (
        ("headers", "headers"),
        ("withoutHeaders", "without_headers"),
        ("queryParams", "query_params"),
    ):
        mine: dict[str, h.StringMatch] = getattr(root, attr)
        for key, b in getattr(leaf, attr).items():
            a = mine.get(key)
            if string_conflict(a, b):
                assert a is not None
                return f"{field}.{key} {_describe(b)} is not within {_describe(a)}"
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return "ignoreUriCase differs"
    if root.port is not None and leaf.port is not None and root.port != leaf.port:
        return f"port {leaf.port} is not port {root.port}"
    if root.gateways and leaf.gateways and not set(leaf.gateways) <= set(root.gateways):
        return "gateways are not a subset of the root's"
    if root.source_namespace and leaf.source_namespace not in (None, "", root.source_namespace):
        return f"sourceNamespace {leaf.source_namespace} is not {root.source_namespace}"
    for key, value in leaf.source_labels.items():
        if root.source_labels.get(key, value) != value:
            return f"sourceLabels.{key} {value} is not {root.source_labels[key]}"
    return None


def _join(a: str | None, b: str | None) -> str | None:
    if a and b:
        return f"{a}-{b}"
    return b or a or None


def merge_match(root: h.HTTPMatchRequest, leaf: h.HTTPMatchRequest) -> h.HTTPMatchRequest:
    return msgspec.structs.replace(
        leaf,
        name=_join(root.name, leaf.name),
        uri=leaf.uri if leaf.uri is not None else root.uri,
        scheme=leaf.scheme if leaf.scheme is not None else root.scheme,
        method=leaf.method if leaf.method is not None else root.method,
        authority=leaf.authority if leaf.authority is not None else root.authority,
        headers={**root.headers, **leaf.headers},
        without_headers={**root.without_headers, **leaf.without_headers},
        query_params={**root.query_params, **leaf.query_params},
        port=leaf.port if leaf.port is not None else root.port,
        gateways=leaf.gateways or root.gateways,
        source_labels={**root.source_labels, **leaf.source_labels},
        source_namespace=leaf.source_namespace or root.source_namespace,
    )


def merge_matches(
    root: tuple[h.HTTPMatchRequest, ...], leaf: tuple[h.HTTPMatchRequest, ...]
) -> tuple[tuple[h.HTTPMatchRequest, ...], str | None]:
    """The combined matches, or () and why a delegate match fits no root match."""
    if not root:
        return leaf, None
    if not leaf:
        return root, None
    out: list[h.HTTPMatchRequest] = []
    for j, d in enumerate(leaf):
        reasons = []
        for rm in root:
            why = conflict(rm, d)
            if why is None:
                out.append(merge_match(rm, d))
            else:
                reasons.append(why)
        if len(reasons) == len(root):
            return (), f"match[{j}] conflicts with every match of the root rule ({reasons[0]})"
    return tuple(out), None


# --- rules --------------------------------------------------------------------------------

_INHERITED = (
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirror_percentage",
    "mirror_percent",
    "mirror_percent_snake",
    "cors_policy",
    "headers",
)


def merge_rule(
    root: h.HTTPRoute, leaf: h.HTTPRoute, fallback_name: str
) -> tuple[h.HTTPRoute | None, str | None]:
    """The delegate rule ``leaf`` merged into the root rule, or None and the conflict."""
    matches, why = merge_matches(root.match, leaf.match)
    if why is not None:
        return None, why
    changes: dict[str, object] = {
        f: getattr(root, f) for f in _INHERITED if getattr(leaf, f) is None
    }
    if not leaf.mirrors:
        changes["mirrors"] = root.mirrors
    return (
        msgspec.structs.replace(
            leaf,
            name=_join(root.name, leaf.name) or fallback_name,
            match=matches,
            delegate=None,
            **changes,
        ),
        None,
    )


def expand(
    root: h.HTTPRoute, delegate: r.VirtualService
) -> Iterator[tuple[int, h.HTTPRoute | None, str | None]]:
    """(index in the delegate, merged rule or None, conflict) for each delegate rule."""
    for j, leaf in enumerate(delegate.spec.http):
        merged, why = merge_rule(root, leaf, f"{delegate.metadata.name}.{j}")
        yield j, merged, why


def merged(vs: r.VirtualService, vss: dict[Key, r.VirtualService]) -> r.VirtualService:
    """``vs`` with every delegating rule replaced by its merged delegate rules.

    Rules whose delegate cannot be used, and delegate rules that conflict, are left out
    (validation has already reported them).
    """
    if not any(rule.delegate is not None for rule in vs.spec.http):
        return vs
    rules: list[h.HTTPRoute] = []
    for rule in vs.spec.http:
        if rule.delegate is None:
            rules.append(rule)
            continue
        delegate, _ = lookup(vs, rule.delegate, vss)
        if delegate is None:
            continue
        rules.extend(m for _, m, _ in expand(rule, delegate) if m is not None)
    spec = msgspec.structs.replace(vs.spec, http=tuple(rules))
    return msgspec.structs.replace(vs, spec=spec)


def problems(vs: r.VirtualService, vss: dict[Key, r.VirtualService]) -> Iterator[tuple[str, str]]:
    """(path in ``vs``, message) for each delegate of ``vs`` that cannot be merged."""
    if is_delegate(vs):
        return
    for i, rule in enumerate(vs.spec.http):
        if rule.delegate is None:
            continue
        path = f"$.spec.http[{i}].delegate"
        delegate, why = lookup(vs, rule.delegate, vss)
        if delegate is None:
            assert why is not None
            yield path, why
            continue
        ns, name = target(vs, rule.delegate)
        for j, _, conflict_ in expand(rule, delegate):
            if conflict_ is not None:
                yield path, f"delegate {ns}/{name} http[{j}]: {conflict_}"
