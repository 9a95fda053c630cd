from __future__ import annotations

import textwrap

import msgspec

from meshfast.config import CompileOptions, compile_config, ir, load_config_text
from meshfast.config.registry import k8s_port_protocol, upstream_protocol
from meshfast.config.resources import ServicePortK8s

REVIEWS = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-v1
  labels:
    kubernetes.io/service-name: reviews
    endpointslice.kubernetes.io/managed-by: x
    version: v1
addressType: IPv4
ports: [{name: http, port: 9081}]
endpoints:
- addresses: [10.0.0.2]
- addresses: [10.0.0.1]
  conditions: {ready: true}
- addresses: [10.0.0.9]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-v2
  labels: {kubernetes.io/service-name: reviews, version: v2}
addressType: IPv4
ports: [{name: http, port: 9082}]
endpoints:
- addresses: [10.0.1.1]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  - name: v3
    labels: {version: v3}
"""

REVIEWS_VS = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}, x-any: {}, x-re: {regex: "*"}}
      withoutHeaders: {x-debug: {prefix: "1"}}
      uri: {prefix: /API, }
      ignoreUriCase: true
    - queryParams: {v: {regex: "\\\\d+"}, flag: {}}
      method: {exact: POST}
    route: [{destination: {host: reviews, subset: v2}, weight: 5}]
    timeout: 1.5s
  - match: [{port: 9999, uri: {exact: /never}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews.default, subset: v2}, weight: 20}
    - {destination: {host: reviews, subset: v3}, weight: 0}
  - match: [{uri: {prefix: /after-catch-all}}]
    route: [{destination: {host: reviews}}]
"""


def compile_text(text: str, **options: object) -> ir.Snapshot:
    config = load_config_text(textwrap.dedent(text))
    return compile_config(config, CompileOptions(**options))  # type: ignore[arg-type]


def by_name(items: tuple[ir.Cluster, ...] | tuple[ir.Listener, ...]) -> dict[str, object]:
    return {x.name: x for x in items}


def outbound_vhosts(snap: ir.Snapshot) -> dict[str, ir.VirtualHost]:
    [table] = [t for t in snap.route_tables if t.name == "outbound"]
    return {v.name: v for v in table.virtual_hosts}


def test_clusters_subsets_and_lb() -> None:
    snap = compile_text(REVIEWS)
    names = [c.name for c in snap.clusters]
    fqdn = "reviews.default.svc.cluster.local"
    assert names == [
        f"outbound|9080|v1|{fqdn}",
        f"outbound|9080|v2|{fqdn}",
        f"outbound|9080|v3|{fqdn}",
        f"outbound|9080||{fqdn}",
    ]
    c = {x.name: x for x in snap.clusters}
    default = c[f"outbound|9080||{fqdn}"]
    assert default.lb == "RANDOM"
    assert default.protocol == "http1"
    assert default.connect_timeout_ms == 10_000
    assert [e.address for e in default.endpoints] == [
        "10.0.0.1:9081",
        "10.0.0.2:9081",
        "10.0.1.1:9082",
    ]
    assert default.endpoints[0].labels == {"version": "v1"}
    assert default.endpoints[0].weight == 1
    v1 = c[f"outbound|9080|v1|{fqdn}"]
    assert (v1.lb, [e.address for e in v1.endpoints]) == (
        "RANDOM",
        ["10.0.0.1:9081", "10.0.0.2:9081"],
    )
    v2 = c[f"outbound|9080|v2|{fqdn}"]
    assert (v2.lb, [e.address for e in v2.endpoints]) == ("ROUND_ROBIN", ["10.0.1.1:9082"])
    assert c[f"outbound|9080|v3|{fqdn}"].endpoints == ()


def test_default_route_and_domains() -> None:
    snap = compile_text(REVIEWS)
    assert snap.version == 1
    assert [(x.name, x.address, x.route_table) for x in snap.listeners] == [
        ("outbound", "127.0.0.1:15001", "outbound")
    ]
    vh = outbound_vhosts(snap)["reviews.default.svc.cluster.local:9080"]
    assert vh.domains == (
        "reviews:9080",
        "reviews.default:9080",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local:9080",
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    )
    [route] = vh.routes
    assert route.name == "default"
    assert route.match_ == ir.RouteMatch()
    assert route.action.clusters == (
        ir.WeightedCluster("outbound|9080||reviews.default.svc.cluster.local", 100),
    )


def test_virtual_service_routes_in_order() -> None:
    snap = compile_text(REVIEWS + REVIEWS_VS)
    vh = outbound_vhosts(snap)["reviews.default.svc.cluster.local:9080"]
    fqdn = "reviews.default.svc.cluster.local"
    # One route per match, the port-9999 match skipped, nothing after the catch-all.
    assert [r.name for r in vh.routes] == ["jason", "jason", "reviews.2"]
    first, second, third = vh.routes
    assert first.match_.path == ir.StringMatch("prefix", "/API", ignore_case=True)
    assert first.match_.headers == (
        ir.HeaderMatch("end-user", ir.StringMatch("exact", "jason")),
        ir.HeaderMatch("x-any", None),
        ir.HeaderMatch("x-re", None),
        ir.HeaderMatch("x-debug", ir.StringMatch("prefix", "1"), invert=True),
    )
    assert first.action.clusters == (ir.WeightedCluster(f"outbound|9080|v2|{fqdn}", 100),)
    assert first.action.timeout_ms == 1500
    assert second.match_.method == ir.StringMatch("exact", "POST")
    assert second.match_.query_params == (
        ir.QueryMatch("v", ir.StringMatch("regex", "\\d+")),
        ir.QueryMatch("flag", None),
    )
    assert second.action is first.action or second.action == first.action
    assert third.match_ == ir.RouteMatch()
    assert third.action.clusters == (
        ir.WeightedCluster(f"outbound|9080|v1|{fqdn}", 80),
        ir.WeightedCluster(f"outbound|9080|v2|{fqdn}", 20),
    )
    assert third.action.timeout_ms == 0


def test_snapshot_is_deterministic_and_encodes() -> None:
    a = compile_text(REVIEWS + REVIEWS_VS, version=7)
    b = compile_text(REVIEWS + REVIEWS_VS, version=7)
    assert a == b
    assert a.version == 7
    assert ir.encode(a) == ir.encode(b)
    assert msgspec.msgpack.decode(ir.encode(a), type=ir.Snapshot) == a
    assert [c.name for c in a.clusters] == sorted(c.name for c in a.clusters)


SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: googleapis}
spec:
  hosts: [www.googleapis.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rewrite-port-for-googleapis}
spec:
  hosts: [www.googleapis.com]
  http:
  - match: [{port: 80}]
    route: [{destination: {host: www.googleapis.com, port: {number: 443}}}]
"""


def test_service_entry_dns_http_and_tcp() -> None:
    snap = compile_text(SE)
    clusters = {c.name: c for c in snap.clusters}
    assert sorted(clusters) == [
        "outbound|443||www.googleapis.com",
        "outbound|80||www.googleapis.com",
    ]
    https = clusters["outbound|443||www.googleapis.com"]
    assert (https.protocol, [e.address for e in https.endpoints]) == (
        "tcp",
        ["www.googleapis.com:443"],
    )
    vh = outbound_vhosts(snap)["www.googleapis.com:80"]
    assert vh.domains == ("www.googleapis.com:80", "www.googleapis.com")
    [route] = vh.routes
    assert route.name == "rewrite-port-for-googleapis.0"
    assert route.action.clusters == (ir.WeightedCluster("outbound|443||www.googleapis.com", 100),)
    listeners = {x.name: x for x in snap.listeners}
    # An HTTPS port without tls[] rules: SNI-routed, everything to the one service.
    tls = listeners["outbound|tls|443"]
    assert (tls.protocol, tls.address, tls.route_table) == ("tls", "127.0.0.1:443", None)
    assert tls.sni_routes == (
        ir.SniRoute(
            "default", ("*",), (ir.WeightedCluster("outbound|443||www.googleapis.com", 100),)
        ),
    )
    assert "outbound|tcp|443" not in listeners


def test_service_entry_static_workload_entries_and_vip() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db}
        spec:
          hosts: [db]
          addresses: [10.9.9.9]
          ports: [{number: 5432, name: pg, protocol: TCP, targetPort: 6432}]
          location: MESH_INTERNAL
          resolution: STATIC
          workloadSelector: {labels: {app: db}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: db-1}
        spec: {address: 10.0.0.1, labels: {app: db, version: v1}, weight: 3}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: db-2}
        spec: {address: 10.0.0.2, labels: {app: db}, ports: {pg: 7000}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: other, namespace: elsewhere}
        spec: {address: 10.0.0.3, labels: {app: db}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: db}
        spec:
          hosts: [db]
          tcp:
          - match: [{port: 1234}]
            route: [{destination: {host: db, subset: nope}}]
          - route:
            - {destination: {host: db}, weight: 1}
            - {destination: {host: db, subset: v1}, weight: 3}
        """
    snap = compile_text(text)
    [cluster] = snap.clusters
    assert cluster.name == "outbound|5432||db.default.svc.cluster.local"
    assert [(e.address, e.weight) for e in cluster.endpoints] == [
        ("10.0.0.1:6432", 3),
        ("10.0.0.2:7000", 1),
    ]
    listener = {x.name: x for x in snap.listeners}["outbound|tcp|5432"]
    assert listener.address == "10.9.9.9:5432"
    assert listener.tcp_routes == (
        ir.TcpRoute(
            "db.tcp.1",
            (
                ir.WeightedCluster("outbound|5432||db.default.svc.cluster.local", 1),
                ir.WeightedCluster("outbound|5432|v1|db.default.svc.cluster.local", 3),
            ),
        ),
    )


def test_vs_only_hosts_and_wildcards() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: wild}
        spec:
          hosts: ["*.example.com", ghost]
          http:
          - route: [{destination: {host: backend, port: {number: 8080}}}]
        """
    vhosts = outbound_vhosts(compile_text(text))
    assert sorted(vhosts) == ["*.example.com:80", "ghost.default.svc.cluster.local:80"]
    assert vhosts["*.example.com:80"].domains == ("*.example.com:80", "*.example.com")
    assert vhosts["ghost.default.svc.cluster.local:80"].domains[0] == "ghost:80"
    [route] = vhosts["*.example.com:80"].routes
    assert route.action.clusters == (
        ir.WeightedCluster("outbound|8080||backend.default.svc.cluster.local", 100),
    )


def test_gateway_only_vs_is_not_applied_to_the_sidecar() -> None:
    config = load_config_text(REVIEWS)
    assert compile_config(config, CompileOptions()) == compile_config(config, CompileOptions())


def test_destination_port_defaults() -> None:
    text = """\
        apiVersion: v1
        kind: Service
        metadata: {name: multi}
        spec:
          ports: [{name: http, port: 80}, {name: http-admin, port: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: single}
        spec:
          ports: [{name: grpc, port: 7000}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: multi}
        spec:
          hosts: [multi]
          http:
          - match: [{uri: {prefix: /single}}]
            route: [{destination: {host: single}}]
          - route: [{destination: {host: multi}}]
        """
    snap = compile_text(text)
    vhosts = outbound_vhosts(snap)
    m80 = vhosts["multi.default.svc.cluster.local:80"]
    m8080 = vhosts["multi.default.svc.cluster.local:8080"]
    assert "multi" in m80.domains
    assert "multi" not in m8080.domains
    assert [r.action.clusters[0].cluster for r in m80.routes] == [
        "outbound|7000||single.default.svc.cluster.local",
        "outbound|80||multi.default.svc.cluster.local",
    ]
    assert [r.action.clusters[0].cluster for r in m8080.routes] == [
        "outbound|7000||single.default.svc.cluster.local",
        "outbound|8080||multi.default.svc.cluster.local",
    ]
    single = vhosts["single.default.svc.cluster.local:7000"]
    assert "single" in single.domains  # lowest HTTP port is the default without port 80
    assert {c.name: c.protocol for c in snap.clusters}[
        "outbound|7000||single.default.svc.cluster.local"
    ] == "http2"


def test_short_names_belong_to_the_sidecar_namespace() -> None:
    text = """\
        apiVersion: v1
        kind: Service
        metadata: {name: reviews, namespace: prod}
        spec: {ports: [{name: http, port: 9080}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: reviews, namespace: default}
        spec: {ports: [{name: http, port: 9080}]}
        """
    vhosts = outbound_vhosts(compile_text(text, namespace="prod"))
    assert vhosts["reviews.prod.svc.cluster.local:9080"].domains[0] == "reviews:9080"
    other = vhosts["reviews.default.svc.cluster.local:9080"].domains
    assert "reviews:9080" not in other
    assert "reviews" not in other
    assert other[0] == "reviews.default:9080"


def test_inbound_app_and_sidecar_ingress() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: default}
        spec:
          ingress:
          - port: {number: 9080, protocol: HTTP, name: http}
            defaultEndpoint: 127.0.0.1:8080
          - port: {number: 3306, protocol: TCP, name: tcp}
            bind: 0.0.0.0
            defaultEndpoint: 0.0.0.0:3307
        """
    snap = compile_text(text, app="127.0.0.1:8000", inbound="127.0.0.2:15006")
    listeners = {x.name: x for x in snap.listeners}
    assert sorted(listeners) == ["inbound", "inbound|3306", "inbound|9080", "outbound"]
    assert (listeners["inbound"].address, listeners["inbound"].route_table) == (
        "127.0.0.2:15006",
        "inbound",
    )
    assert listeners["inbound|9080"].address == "127.0.0.2:9080"
    assert listeners["inbound|9080"].route_table == "inbound|9080"
    tcp = listeners["inbound|3306"]
    assert (tcp.address, tcp.protocol) == ("0.0.0.0:3306", "tcp")
    assert tcp.tcp_routes == (ir.TcpRoute("default", (ir.WeightedCluster("inbound|3306||", 100),)),)
    clusters = {c.name: c for c in snap.clusters}
    app = clusters["inbound|app"]
    assert (app.lb, app.protocol, app.endpoints) == (
        "ROUND_ROBIN",
        "http1",
        (ir.Endpoint("127.0.0.1:8000"),),
    )
    assert clusters["inbound|9080||"].endpoints == (ir.Endpoint("127.0.0.1:8080"),)
    assert clusters["inbound|3306||"].endpoints == (ir.Endpoint("127.0.0.1:3307"),)
    tables = {t.name: t for t in snap.route_tables}
    [vh] = tables["inbound"].virtual_hosts
    assert vh.domains == ("*",)
    assert vh.routes[0].action.clusters == (ir.WeightedCluster("inbound|app", 100),)


def test_sidecar_egress_limits_services() -> None:
    services = """\
        apiVersion: v1
        kind: Service
        metadata: {name: a, namespace: default}
        spec: {ports: [{name: http, port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: b, namespace: prod}
        spec: {ports: [{name: http, port: 80}]}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext, namespace: prod}
        spec:
          hosts: [api.example.com]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: DNS
        """

    def hosts_for(egress: str) -> list[str]:
        text = textwrap.dedent(services) + textwrap.dedent(
            f"""\
            ---
            apiVersion: networking.istio.io/v1
            kind: Sidecar
            metadata: {{name: default}}
            spec: {{egress: [{{hosts: {egress}}}]}}
            """
        )
        snap = compile_text(text)
        return sorted({c.name.split("|")[-1] for c in snap.clusters})

    every = ["a.default.svc.cluster.local", "api.example.com", "b.prod.svc.cluster.local"]
    assert hosts_for('["*/*"]') == every
    assert hosts_for('["./*"]') == ["a.default.svc.cluster.local"]
    assert hosts_for('["prod/*"]') == ["api.example.com", "b.prod.svc.cluster.local"]
    assert hosts_for('["*/api.example.com"]') == ["api.example.com"]
    assert hosts_for('["prod/b.prod.svc.cluster.local", "./a"]') == [
        "a.default.svc.cluster.local",
        "b.prod.svc.cluster.local",
    ]
    assert hosts_for('["*/*.example.com"]') == ["api.example.com"]


def test_protocols() -> None:
    assert [
        upstream_protocol(p) for p in ("HTTP", "http2", "GRPC", "GRPC-WEB", "HTTPS", "TCP", None)
    ] == [
        "http1",
        "http2",
        "http2",
        "http2",
        "tcp",
        "tcp",
        "http1",
    ]

    def proto(**kw: object) -> str:
        return k8s_port_protocol(ServicePortK8s(**kw))  # type: ignore[arg-type]

    assert proto(port=80, app_protocol="kubernetes.io/h2c") == "HTTP2"
    assert proto(port=80, app_protocol="grpc", name="tcp-x") == "GRPC"
    assert proto(port=80, name="tcp-mysql") == "TCP"
    assert proto(port=80, name="grpc-web-ui") == "GRPC"
    assert proto(port=3306) == "TCP"
    assert proto(port=3306, name="web") == "TCP"
    assert proto(port=8080, name="web") == "HTTP"


def test_resolution_none_and_passthrough_become_original_destination_clusters() -> None:
    from meshfast.config import CompileOptions, compile_config, load_config_text

    text = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static}
spec:
  hosts: [static.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: static}
spec:
  host: static.example.com
  subsets: [{name: pass, labels: {}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}]
"""
    snap = compile_config(load_config_text(text), CompileOptions())
    clusters = {c.name: c for c in snap.clusters}
    assert clusters["outbound|80||ext.example.com"].original_dst
    assert not clusters["outbound|80||static.example.com"].original_dst
    assert clusters["outbound|80|pass|static.example.com"].original_dst
