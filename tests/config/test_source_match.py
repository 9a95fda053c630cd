"""The config-time (SEL) match fields: ``sourceLabels``, ``sourceNamespace`` and per-match
``gateways`` of ``http[]``/``tcp[]``/``tls[]`` decide which match entries this proxy keeps."""

from __future__ import annotations

import textwrap

from meshfast.config import CompileOptions, compile_config, ir, load_config_text

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: vault}
spec:
  ports: [{name: https, port: 8200}]
---
"""

HTTP_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - name: canary
    match:
    - {sourceLabels: {app: ui, version: v2}, uri: {prefix: /a}}
    - {sourceNamespace: team, uri: {prefix: /b}}
    - {gateways: [default/gw], uri: {prefix: /c}}
    route: [{destination: {host: web, subset: v2}}]
  - name: rest
    route: [{destination: {host: web, subset: v1}}]
"""


def compile_text(text: str, **options: object) -> ir.Snapshot:
    config = load_config_text(textwrap.dedent(text))
    return compile_config(config, CompileOptions(**options))  # type: ignore[arg-type]


def web_routes(snap: ir.Snapshot) -> list[tuple[str, str | None]]:
    [table] = [t for t in snap.route_tables if t.name == "outbound"]
    [vhost] = [v for v in table.virtual_hosts if v.name.startswith("web.")]
    out = []
    for rt in vhost.routes:
        uri = rt.match_.path
        out.append((rt.name, None if uri is None else uri.value))
    return out


def listener(snap: ir.Snapshot, name: str) -> ir.Listener:
    [found] = [x for x in snap.listeners if x.name == name]
    return found


def test_http_source_labels_and_namespace() -> None:
    text = SERVICES + HTTP_VS
    # No labels, another namespace, a sidecar (not default/gw): every canary match is dropped,
    # and the rule does not turn into a catch-all.
    assert web_routes(compile_text(text)) == [("rest", None)]
    # A subset of the labels is not enough; extra labels of the proxy do not matter.
    assert web_routes(compile_text(text, labels={"app": "ui"})) == [("rest", None)]
    labels = {"app": "ui", "version": "v2", "zone": "z"}
    assert web_routes(compile_text(text, labels=labels)) == [("canary", "/a"), ("rest", None)]
    assert web_routes(compile_text(text, labels={"app": "ui", "version": "v1"})) == [("rest", None)]
    assert web_routes(compile_text(text, namespace="team")) == [("canary", "/b"), ("rest", None)]
    both = compile_text(text, namespace="team", labels=labels)
    assert web_routes(both) == [("canary", "/a"), ("canary", "/b"), ("rest", None)]


def test_every_match_filtered_leaves_the_default_route() -> None:
    text = SERVICES + textwrap.dedent(
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: web}
        spec:
          hosts: [web]
          http:
          - name: only
            match: [{sourceLabels: {app: ui}}, {sourceNamespace: team}]
            route: [{destination: {host: web, subset: v2}}]
        """
    )
    assert web_routes(compile_text(text)) == [("default", None)]
    assert web_routes(compile_text(text, labels={"app": "ui"})) == [("only", None)]


TCP_TLS_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{sourceLabels: {app: ui}}, {sourceNamespace: team, port: 5432}]
    route: [{destination: {host: web, port: {number: 80}}}]
  - match: [{gateways: [gw], port: 5432}]
    route: [{destination: {host: vault, port: {number: 8200}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vault}
spec:
  hosts: [vault, "*.example.com"]
  tls:
  - match:
    - {sniHosts: [vault], sourceLabels: {app: ui}}
    - {sniHosts: [team.example.com], sourceNamespace: team}
    - {sniHosts: [other.example.com], gateways: [mesh]}
    - {sniHosts: [gw.example.com], gateways: [default/gw]}
    route: [{destination: {host: db, port: {number: 5432}}}]
"""


def tcp_names(snap: ir.Snapshot) -> list[str]:
    return [rt.name for rt in listener(snap, "outbound|tcp|5432").tcp_routes]


def sni(snap: ir.Snapshot) -> list[tuple[str, ...]]:
    return [r.sni_hosts for r in listener(snap, "outbound|tls|8200").sni_routes]


def test_tcp_source_labels_namespace_and_gateways() -> None:
    text = SERVICES + TCP_TLS_VS
    # tcp[0] filtered out everywhere it does not apply, tcp[1] is for default/gw only.
    assert tcp_names(compile_text(text)) == ["default"]
    assert tcp_names(compile_text(text, labels={"app": "ui"})) == ["db.tcp.0"]
    assert tcp_names(compile_text(text, namespace="team")) == ["db.tcp.0"]


def test_tls_source_labels_namespace_and_gateways() -> None:
    text = SERVICES + TCP_TLS_VS
    other = ("other.example.com",)
    assert sni(compile_text(text)) == [other, ("*",)]
    labelled = compile_text(text, labels={"app": "ui"})
    assert sni(labelled) == [("vault.default.svc.cluster.local", *other), ("*",)]
    team = compile_text(text, namespace="team")
    assert sni(team) == [("team.example.com", *other), ("*",)]


GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [web.example.com]
  gateways: [gw]
  http:
  - name: ui
    match: [{sourceLabels: {istio: ingress}}]
    route: [{destination: {host: web}}]
  - name: elsewhere
    match: [{gateways: [mesh]}]
    route: [{destination: {host: web}}]
  tcp:
  - match: [{sourceNamespace: edge}]
    route: [{destination: {host: db}}]
"""


def test_gateway_mode_uses_the_gateway_s_own_labels_and_namespace() -> None:
    text = SERVICES + GATEWAY

    def routes(snap: ir.Snapshot) -> tuple[list[str], list[str]]:
        http = [rt.name for t in snap.route_tables for v in t.virtual_hosts for rt in v.routes]
        tcp = [rt.name for x in snap.listeners for rt in x.tcp_routes]
        return http, tcp

    options = {"gateway": True, "gateway_bind": "127.0.0.1"}
    assert routes(compile_text(text, **options)) == ([], [])
    got = compile_text(text, labels={"istio": "ingress"}, namespace="edge", **options)
    assert routes(got) == (["ui"], ["edge.tcp.0"])


def test_delegate_merges_and_checks_source_fields() -> None:
    from meshfast.config import delegate
    from meshfast.config.http_route import HTTPMatchRequest

    root = HTTPMatchRequest(source_labels={"app": "ui"}, source_namespace="team")
    leaf = HTTPMatchRequest(source_labels={"version": "v2"})
    merged = delegate.merge_match(root, leaf)
    assert merged.source_labels == {"app": "ui", "version": "v2"}
    assert merged.source_namespace == "team"
    assert delegate.conflict(root, leaf) is None
    assert delegate.conflict(root, HTTPMatchRequest(source_namespace="x")) == (
        "sourceNamespace x is not team"
    )
    assert delegate.conflict(root, HTTPMatchRequest(source_labels={"app": "db"})) == (
        "sourceLabels.app db is not ui"
    )
