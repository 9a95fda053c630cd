"""Delegate VirtualServices: http[].delegate merged into the root (validate and compile)."""

from __future__ import annotations

import textwrap

import pytest

from meshfast.config import CompileOptions, ConfigError, compile_config, ir, load_config_text

FQDN = "reviews.default.svc.cluster.local"
V1 = f"outbound|9080|v1|{FQDN}"
V2 = f"outbound|9080|v2|{FQDN}"
V3 = f"outbound|9080|v3|{FQDN}"

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{name: http, port: 9080}]}
"""


def doc(name: str, spec: str, namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return (
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: {name}{ns}}}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")
    )


def routes(*docs: str) -> tuple[ir.Route, ...]:
    config = load_config_text(SERVICES + "".join(docs))
    snap = compile_config(config, CompileOptions())
    [table] = [t for t in snap.route_tables if t.name == "outbound"]
    [vh] = [v for v in table.virtual_hosts if v.name == f"{FQDN}:9080"]
    return vh.routes


def problems(*docs: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(SERVICES + "".join(docs), source="t.yaml")
    return [(p.name, p.path, p.message) for p in info.value.problems]


def clusters(route: ir.Route) -> list[str]:
    return [c.cluster for c in route.action.clusters]


def prefix(value: str) -> ir.StringMatch:
    return ir.StringMatch(kind="prefix", value=value)


def exact(value: str) -> ir.StringMatch:
    return ir.StringMatch(kind="exact", value=value)


ROOT = """\
hosts: [reviews]
http:
- name: api
  match: [{uri: {prefix: /api}}]
  timeout: 3s
  delegate: {name: reviews-api}
- name: rest
  route: [{destination: {host: reviews, subset: v3}}]
"""

DELEGATE = """\
http:
- name: v1
  match: [{uri: {prefix: /api/v1}}, {uri: {exact: /api/one}}]
  route: [{destination: {host: reviews, subset: v1}}]
- match: [{headers: {x-user: {exact: jason}}}]
  timeout: 1s
  route: [{destination: {host: reviews, subset: v2}}]
- directResponse: {status: 418}
"""


def test_delegate_rules_replace_the_root_rule_in_place() -> None:
    got = routes(doc("reviews", ROOT), doc("reviews-api", DELEGATE))
    assert [(r.name, r.match_.path) for r in got] == [
        ("api-v1", prefix("/api/v1")),  # the delegate's longer prefix wins
        ("api-v1", exact("/api/one")),  # an exact path under the root's prefix
        ("api", prefix("/api")),  # no uri in the delegate: the root's prefix is kept
        ("api", prefix("/api")),  # no match at all: the root's matches
        ("rest", None),
    ]
    assert clusters(got[0]) == clusters(got[1]) == [V1]
    assert got[2].match_.headers == (ir.HeaderMatch(name="x-user", value=exact("jason")),)
    assert clusters(got[2]) == [V2]
    assert got[2].action.timeout_ms == 1000  # the delegate's own timeout
    assert got[0].action.timeout_ms == 3000  # inherited from the root rule
    assert got[3].action.direct_response == ir.DirectResponse(status=418)
    assert clusters(got[4]) == [V3]


def test_matches_are_combined_root_by_delegate_with_unions_of_headers() -> None:
    root = """\
    hosts: [reviews]
    http:
    - match:
      - {uri: {prefix: /a}, headers: {x-env: {exact: prod}}}
      - {uri: {prefix: /b}, method: {exact: GET}}
      delegate: {name: d}
    """
    delegate = """\
    http:
    - match: [{uri: {prefix: /b/x}, queryParams: {q: {exact: "1"}}}, {headers: {x-user: {}}}]
      route: [{destination: {host: reviews, subset: v1}}]
    """
    got = routes(doc("reviews", root), doc("d", delegate))
    summary = [
        (
            r.match_.path,
            r.match_.method,
            tuple(h.name for h in r.match_.headers),
            tuple(q.name for q in r.match_.query_params),
        )
        for r in got
    ]
    assert summary == [
        # /b/x is only within /b: one combined match
        (prefix("/b/x"), exact("GET"), (), ("q",)),
        # a match without uri fits both root matches
        (prefix("/a"), None, ("x-env", "x-user"), ()),
        (prefix("/b"), exact("GET"), ("x-user",), ()),
    ]
    assert got[0].name == "d.0"  # neither rule named: <delegate>.<index>


def test_root_without_match_takes_the_delegate_matches_and_catch_all_ends_the_list() -> None:
    root = """\
    hosts: [reviews]
    http:
    - delegate: {name: d}
    - route: [{destination: {host: reviews, subset: v3}}]
    """
    delegate = """\
    http:
    - match: [{uri: {exact: /one}}]
      route: [{destination: {host: reviews, subset: v1}}]
    - route: [{destination: {host: reviews, subset: v2}}]
    """
    got = routes(doc("reviews", root), doc("d", delegate))
    assert [(r.match_.path, clusters(r)) for r in got] == [
        (exact("/one"), [V1]),
        (None, [V2]),  # a catch-all: the root's later rule is unreachable
    ]


def test_delegate_in_another_namespace_and_unreferenced_delegates() -> None:
    root = """\
    hosts: [reviews]
    http:
    - delegate: {name: d, namespace: team}
    """
    delegate = """\
    exportTo: [default]
    http:
    - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
    """
    orphan = """\
    http:
    - route: [{destination: {host: reviews, subset: v2}}]
    """
    got = routes(doc("reviews", root), doc("d", delegate, "team"), doc("orphan", orphan))
    assert [clusters(r) for r in got] == [[V1]]


def test_a_delegate_alone_produces_no_routes() -> None:
    delegate = """\
    http:
    - route: [{destination: {host: reviews, subset: v2}}]
    """
    config = load_config_text(SERVICES + doc("d", delegate))
    snap = compile_config(config, CompileOptions())
    [table] = [t for t in snap.route_tables if t.name == "outbound"]
    assert [v.name for v in table.virtual_hosts] == [f"{FQDN}:9080"]
    [route] = table.virtual_hosts[0].routes
    assert route.name == "default"


def test_delegate_rules_follow_gateway_bindings_of_the_root() -> None:
    root = """\
    hosts: [reviews.example.com]
    gateways: [gw]
    http:
    - match: [{uri: {prefix: /api}}]
      delegate: {name: d}
    """
    delegate = """\
    http:
    - match: [{uri: {prefix: /api/v1}}]
      route: [{destination: {host: reviews, subset: v1}}]
    """
    gateway = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    config = load_config_text(SERVICES + doc("reviews", root) + doc("d", delegate) + gateway)
    snap = compile_config(config, CompileOptions(gateway=True))
    [table] = snap.route_tables
    [vh] = table.virtual_hosts
    assert [(r.match_.path, clusters(r)) for r in vh.routes] == [
        (prefix("/api/v1"), [f"outbound|9080|v1|{FQDN}"])
    ]


def test_delegate_document_problems() -> None:
    root = """\
    hosts: [reviews]
    http:
    - route: [{destination: {host: reviews}}]
      delegate: {name: d}
    - delegate: {name: ""}
    """
    d = """\
    tcp:
    - route: [{destination: {host: reviews}}]
    http:
    - delegate: {name: d2}
    """
    assert problems(doc("reviews", root), doc("d", d)) == [
        (
            "reviews",
            "$.spec.http[0]",
            "only one of route, redirect, directResponse or delegate may be set"
            " (got route, delegate)",
        ),
        ("reviews", "$.spec.http[1].delegate.name", "name must not be empty"),
        ("d", "$.spec.tcp", "a delegate VirtualService (no hosts) cannot have tcp"),
        (
            "d",
            "$.spec.http[0].delegate",
            "a delegate VirtualService (no hosts) cannot delegate again (one level only)",
        ),
    ]


def test_delegate_reference_and_conflict_problems() -> None:
    root = """\
    hosts: [reviews]
    http:
    - delegate: {name: missing}
    - delegate: {name: has-hosts}
    - delegate: {name: private, namespace: team}
    - match: [{uri: {prefix: /a}}, {uri: {exact: /z}, ignoreUriCase: true}]
      delegate: {name: d}
    """
    has_hosts = """\
    hosts: [other]
    http:
    - route: [{destination: {host: reviews}}]
    """
    private = """\
    exportTo: ["."]
    http:
    - route: [{destination: {host: reviews}}]
    """
    d = """\
    http:
    - match: [{uri: {prefix: /b}}]
      route: [{destination: {host: reviews}}]
    - match: [{uri: {regex: "/a.*"}}]
      route: [{destination: {host: reviews}}]
    - match: [{uri: {prefix: /a/x}, port: 80}, {uri: {exact: /z}}]
      route: [{destination: {host: reviews}}]
    - match: [{uri: {prefix: /a/x}}, {uri: {exact: /z}, ignoreUriCase: true}]
      route: [{destination: {host: reviews}}]
    """
    got = problems(
        doc("reviews", root),
        doc("has-hosts", has_hosts),
        doc("private", private, "team"),
        doc("d", d),
    )
    where = ("reviews", "$.spec.http[3].delegate")
    every = "conflicts with every match of the root rule"
    assert got == [
        ("reviews", "$.spec.http[0].delegate", "delegate VirtualService default/missing not found"),
        (
            "reviews",
            "$.spec.http[1].delegate",
            "VirtualService default/has-hosts has hosts, so it cannot be a delegate",
        ),
        (
            "reviews",
            "$.spec.http[2].delegate",
            "delegate VirtualService team/private is not exported to namespace default",
        ),
        (
            *where,
            f'delegate default/d http[0]: match[0] {every} (uri prefix "/b" is not within'
            ' prefix "/a")',
        ),
        (
            *where,
            f'delegate default/d http[1]: match[0] {every} (uri regex "/a.*" is not within'
            ' prefix "/a")',
        ),
        # /z without ignoreUriCase fits neither root match (the first by uri, the second by case)
        (
            *where,
            f'delegate default/d http[2]: match[1] {every} (uri exact "/z" is not within'
            ' prefix "/a")',
        ),
    ]
