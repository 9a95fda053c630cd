"""AuthorizationPolicy's compile: which policies apply to a sidecar, Istio's matchers, the TCP
form; and validate's problems with FILE:LINE."""

from __future__ import annotations

import textwrap

import pytest

from meshfast.config import authz, ir
from meshfast.config.compile import CompileOptions, compile_config
from meshfast.config.model import ConfigError
from meshfast.config.validate import load_config_text


def policy(name: str, namespace: str, spec: str) -> str:
    return (
        f"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec).rstrip("\n") + "\n", "  ")
    )


def compiled(text: str, **options: object) -> ir.Snapshot:
    config = load_config_text(text, source="t.yaml")
    defaults: dict[str, object] = {"namespace": "default", "app": "127.0.0.1:1"}
    return compile_config(config, CompileOptions(**{**defaults, **options}))  # type: ignore[arg-type]


def test_scope_is_namespace_root_namespace_and_selector() -> None:
    text = (
        policy("ns-wide", "default", "rules: [{}]")
        + policy("mine", "default", "selector: {matchLabels: {app: reviews}}\nrules: [{}]")
        + policy("theirs", "default", "selector: {matchLabels: {app: ratings}}\nrules: [{}]")
        + policy(
            "mesh", "istio-system", "action: DENY\nrules: [{to: [{operation: {ports: ['1']}}]}]"
        )
        + policy("other-ns", "prod", "rules: [{}]")
        + policy("waypoint", "default", "targetRefs: [{kind: Service, name: reviews}]")
    )
    snap = compiled(text, labels={"app": "reviews", "version": "v1"})
    assert [p.name for p in snap.authz] == [
        "default/mine",
        "default/ns-wide",
        "istio-system/mesh",
    ]
    other = compiled(text, labels={"app": "details"}, root_namespace="mesh-root")
    assert [p.name for p in other.authz] == ["default/ns-wide"]
    assert [(x.name, x.authz) for x in snap.listeners] == [("inbound", True), ("outbound", False)]


def test_no_policy_no_authz() -> None:
    assert compiled("").authz == ()


def test_istio_matchers() -> None:
    text = policy(
        "p",
        "foo",
        """\
        rules:
        - from:
          - source:
              principals: [cluster.local/ns/a/sa/b, "*-x", "p*", "*"]
              namespaces: ["team-*"]
          to:
          - operation: {paths: ["/v1/{*}/items"], hosts: [Example.COM], ports: ["8080"]}
          when:
          - {key: "request.headers[:method]", values: [GET]}
          - {key: "request.headers[X-Env]", notValues: [prod]}
          - {key: "request.auth.claims[iss]", values: [me]}
        """,
    )
    snap = compiled(text, namespace="foo")
    (rule,) = snap.authz[0].rules
    (principals, namespaces) = rule.from_[0]
    assert [v.kind + ":" + v.value for v in principals.values] == [
        "exact:spiffe://cluster.local/ns/a/sa/b",
        "regex:spiffe://.*-x",
        "prefix:spiffe://p",
        "present:",
    ]
    assert namespaces.values == (ir.AuthzValue(kind="regex", value=".*/ns/team-.*/.*"),)
    assert [c.attribute for c in rule.to[0]] == ["host", "path", "destination_port"]
    assert rule.to[0][1].values == (ir.AuthzValue(kind="template", value="/v1/{*}/items"),)
    assert [(c.attribute, c.key) for c in rule.when] == [
        ("method", ""),
        ("header", "X-Env"),
        ("request_auth", ""),
    ]
    assert authz.service_account("sa", "foo").value == ("spiffe://.+/ns/foo/(.+/|)sa/sa(/.+)?")
    assert authz.trust_domain("td").value == "spiffe://td/"


def test_tcp_form_narrows_allow_and_widens_deny() -> None:
    text = policy(
        "allow",
        "default",
        "rules: [{to: [{operation: {methods: [GET]}}]}, {to: [{operation: {ports: ['80']}}]}]",
    ) + policy(
        "deny",
        "default",
        "action: DENY\nrules: [{to: [{operation: {methods: [POST], ports: ['80']}}]}]",
    )
    snap = compiled(text)
    allow, deny = snap.authz_tcp
    assert len(allow.rules) == 1
    assert [c.attribute for c in allow.rules[0].to[0]] == ["destination_port"]
    assert [c.attribute for c in deny.rules[0].to[0]] == ["destination_port"]
    # The HTTP form keeps everything.
    assert [c.attribute for c in snap.authz[1].rules[0].to[0]] == ["method", "destination_port"]


def test_dry_run_and_audit() -> None:
    text = policy("audit", "default", "action: AUDIT\nrules: [{}]").replace(
        "namespace: default}", "namespace: default, annotations: {istio.io/dry-run: 'true'}}"
    )
    (p,) = compiled(text).authz
    assert (p.action, p.dry_run) == ("AUDIT", True)


def test_validate_reports_with_file_and_line() -> None:
    text = policy(
        "bad",
        "default",
        """\
        action: CUSTOM
        provider: {name: ext}
        rules:
        - when:
          - {key: source.ip, values: [10.0.0.0/40]}
          - {key: request.nope, values: [x]}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="t.yaml")
    assert [str(p) for p in info.value.problems] == [
        "t.yaml:6: AuthorizationPolicy/bad: $.spec.action: CUSTOM (an external authorizer)"
        " is not implemented yet: use ALLOW, DENY or AUDIT",
        't.yaml:10: AuthorizationPolicy/bad: $.spec.rules[0].when[0].values[0]: "10.0.0.0/40"'
        " is not an IP address or CIDR",
        't.yaml:11: AuthorizationPolicy/bad: $.spec.rules[0].when[1].key: "request.nope":'
        " unknown attribute",
    ]


def test_gateway_listeners_enforce_the_gateways_policies() -> None:
    text = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
""" + policy(
        "allow-office",
        "istio-system",
        "selector: {matchLabels: {istio: ingressgateway}}\n"
        "rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]",
    )
    snap = compiled(
        text, namespace="istio-system", gateway=True, labels={"istio": "ingressgateway"}
    )
    assert [(x.name, x.authz) for x in snap.listeners] == [
        ("gateway|8080", True),
        ("gateway|9000", True),
    ]
    assert [p.name for p in snap.authz] == ["istio-system/allow-office"]
    assert [p.name for p in snap.authz_tcp] == ["istio-system/allow-office"]


def test_trust_domain_aliases_as_istio_rewrites_them() -> None:
    bundle = ("td2", "td1")
    assert authz.with_aliases(["cluster.local/ns/foo/sa/bar"], bundle) == (
        "td2/ns/foo/sa/bar",
        "td1/ns/foo/sa/bar",
    )
    assert authz.with_aliases(["td1/ns/foo/sa/bar"], bundle) == (
        "td2/ns/foo/sa/bar",
        "td1/ns/foo/sa/bar",
    )
    # Not a trust domain of the mesh, any trust domain, not a SPIFFE path: as written.
    for p in ("other/ns/foo/sa/bar", "*/ns/foo/sa/bar", "*", "sa/bar"):
        assert authz.with_aliases([p], bundle) == (p,)
    # A "*x" trust domain stays as written for the domains it matches.
    assert authz.with_aliases(["*-td/ns/a/sa/b"], ("new-td", "old-td", "x")) == (
        "*-td/ns/a/sa/b",
        "x/ns/a/sa/b",
    )
    assert authz.expand_domains(["td1", "other"], bundle) == ("td2", "td1", "other")
    # The default bundle changes nothing.
    assert authz.with_aliases(["cluster.local/ns/a/sa/b"], ("cluster.local",)) == (
        "cluster.local/ns/a/sa/b",
    )
