"""Gateways (``CompileOptions.gateway``), VirtualService ``tls[]`` and gateway binding."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from meshfast.config import (
    CompileOptions,
    ConfigError,
    compile_config,
    ir,
    load_config,
    load_config_text,
)
from meshfast.config.listeners import HTTPS_REDIRECT

from ..samples import SAMPLES

BOOKINFO = SAMPLES / "samples" / "bookinfo"
TCP_ECHO = SAMPLES / "samples" / "tcp-echo"
GATEWAY = CompileOptions(gateway=True, gateway_bind="127.0.0.1")


def wc(cluster: str, weight: int = 100) -> ir.WeightedCluster:
    return ir.WeightedCluster(cluster, weight)


def compile_text(text: str, options: CompileOptions = GATEWAY) -> ir.Snapshot:
    return compile_config(load_config_text(textwrap.dedent(text)), options)


def listeners(snap: ir.Snapshot) -> dict[str, ir.Listener]:
    return {x.name: x for x in snap.listeners}


def vhosts(snap: ir.Snapshot, table: str) -> dict[str, ir.VirtualHost]:
    [t] = [t for t in snap.route_tables if t.name == table]
    return {v.name: v for v in t.virtual_hosts}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), source="g.yaml")
    return [str(p) for p in info.value.problems]


def bookinfo_services() -> str:
    text = (BOOKINFO / "platform/kube/bookinfo.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Service"]
    return yaml.safe_dump_all(docs)


HTTPBIN = """\
apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec:
  ports: [{name: http, port: 8000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin
  labels: {kubernetes.io/service-name: httpbin}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
"""


# --- bookinfo ------------------------------------------------------------------------------


def test_bookinfo_gateway_mode() -> None:
    text = "\n---\n".join(
        [bookinfo_services(), (BOOKINFO / "networking/bookinfo-gateway.yaml").read_text()]
    )
    config = load_config_text(text)
    snap = compile_config(config, GATEWAY)
    assert snap.listeners == (
        ir.Listener(
            name="gateway|8080",
            address="127.0.0.1:8080",
            protocol="http",
            route_table="gateway|8080",
        ),
    )
    [table] = snap.route_tables
    [vh] = table.virtual_hosts
    assert (table.name, vh.name, vh.domains) == ("gateway|8080", "*:8080", ("*",))
    productpage = wc("outbound|9080||productpage.default.svc.cluster.local")
    assert [(r.name, r.match_.path, r.action.clusters) for r in vh.routes] == [
        ("bookinfo.0", ir.StringMatch("exact", "/productpage"), (productpage,)),
        ("bookinfo.0", ir.StringMatch("prefix", "/static"), (productpage,)),
        ("bookinfo.0", ir.StringMatch("exact", "/login"), (productpage,)),
        ("bookinfo.0", ir.StringMatch("exact", "/logout"), (productpage,)),
        ("bookinfo.0", ir.StringMatch("prefix", "/api/v1/products"), (productpage,)),
    ]
    # The destinations' clusters exist in gateway mode too.
    assert productpage.cluster in {c.name for c in snap.clusters}
    assert len(snap.clusters) == 4

    # Default bind, and the sidecar view of the same files: no gateway, no gateway-bound routes.
    assert compile_config(config, CompileOptions(gateway=True)).listeners[0].address == (
        "0.0.0.0:8080"
    )
    sidecar = compile_config(config, CompileOptions())
    assert [x.name for x in sidecar.listeners] == ["outbound"]
    names = {r.name for v in sidecar.route_tables[0].virtual_hosts for r in v.routes}
    assert names == {"default"}


def test_sidecar_options_ignored_in_gateway_mode() -> None:
    text = (
        HTTPBIN
        + """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: [other/*]}]
  ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: 127.0.0.1:8080}]
---
"""
        + (SAMPLES / "samples/httpbin/httpbin-gateway.yaml").read_text()
    )
    options = CompileOptions(gateway=True, gateway_bind="127.0.0.1", app="127.0.0.1:9")
    snap = compile_text(text, options)
    assert [x.name for x in snap.listeners] == ["gateway|80"]
    [vh] = snap.route_tables[0].virtual_hosts
    assert vh.routes[0].action.clusters == (wc("outbound|8000||httpbin.default.svc.cluster.local"),)
    # Sidecar egress scoping does not apply to gateways.
    assert [c.name for c in snap.clusters] == ["outbound|8000||httpbin.default.svc.cluster.local"]


# --- hosts and binding ----------------------------------------------------------------------


GW_HOSTS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*.example.com", "default/other.org", "./edge.local", "apps/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: default}
spec:
  hosts: ["*", api.example.com, other.org, edge.local, "*.org"]
  gateways: [edge/gw]
  http:
  - route: [{destination: {host: httpbin}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: default}
spec:
  hosts: [api.example.com]
  gateways: [edge/gw, mesh]
  http:
  - match: [{uri: {prefix: /b}, gateways: [edge/gw]}, {uri: {prefix: /mesh}, gateways: [mesh]}]
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /both}}]
    route: [{destination: {host: httpbin}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: c, namespace: edge}
spec:
  hosts: [edge.local, www.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: httpbin.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d, namespace: default}
spec:
  hosts: [www.example.com]
  gateways: [gw]  # default/gw: no such Gateway
  http:
  - route: [{destination: {host: httpbin}}]
"""


def test_host_intersection_namespaces_and_merging() -> None:
    snap = compile_text(HTTPBIN + "---\n" + GW_HOSTS)
    got = vhosts(snap, "gateway|8080")
    # "*" narrowed to *.example.com and other.org; edge.local only from VS c (namespace edge);
    # "*.org" narrowed to other.org; VS d names a Gateway that does not exist.
    assert sorted(got) == [
        "*.example.com:8080",
        "api.example.com:8080",
        "edge.local:8080",
        "other.org:8080",
        "www.example.com:8080",
    ]
    assert got["*.example.com:8080"].domains == ("*.example.com:8080", "*.example.com")
    # a and b merged for api.example.com: b's non-catch-all routes, then a's catch-all;
    # b's /mesh match is for sidecars only.
    api = got["api.example.com:8080"]
    assert [(r.name, r.match_.path) for r in api.routes] == [
        ("b.0", ir.StringMatch("prefix", "/b")),
        ("b.1", ir.StringMatch("prefix", "/both")),
        ("a.0", None),
    ]
    assert [r.name for r in got["www.example.com:8080"].routes] == ["c.0"]
    assert [r.name for r in got["edge.local:8080"].routes] == ["c.0"]
    assert [r.name for r in got["other.org:8080"].routes] == ["a.0"]

    sidecar = compile_text(HTTPBIN + "---\n" + GW_HOSTS, CompileOptions())
    out = vhosts(sidecar, "outbound")["api.example.com:80"]
    assert [(r.name, r.match_.path) for r in out.routes] == [
        ("b.0", ir.StringMatch("prefix", "/mesh")),
        ("b.1", ir.StringMatch("prefix", "/both")),
    ]


# --- HTTPS ---------------------------------------------------------------------------------


HTTPS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure}
spec:
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.com]
    tls:
      mode: %(mode)s
      serverCertificate: certs/cert.pem
      privateKey: /abs/key.pem
      caCertificates: ca.pem
      minProtocolVersion: TLSV1_3
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [bookinfo.com, other.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: [bookinfo.com]
  gateways: [secure]
  http:
  - route: [{destination: {host: httpbin}}]
"""


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL"])
def test_https_server_paths_relative_to_the_yaml(tmp_path: Path, mode: str) -> None:
    (tmp_path / "gw").mkdir()
    (tmp_path / "gw/gateway.yaml").write_text(HTTPS % {"mode": mode})
    (tmp_path / "services.yaml").write_text(HTTPBIN)
    config = load_config([tmp_path / "services.yaml", tmp_path / "gw"])
    snap = compile_config(config, GATEWAY)
    got = listeners(snap)
    assert got["gateway|8443"] == ir.Listener(
        name="gateway|8443",
        address="127.0.0.1:8443",
        protocol="http",
        route_table="gateway|8443",
        tls=ir.TlsServer(
            cert_chain=str(tmp_path / "gw/certs/cert.pem"),
            private_key="/abs/key.pem",
            client_ca=str(tmp_path / "gw/ca.pem") if mode == "MUTUAL" else None,
            min_version="TLSV1_3",
        ),
    )
    secure = vhosts(snap, "gateway|8443")["bookinfo.com:8443"]
    assert secure.domains == ("bookinfo.com:8443", "bookinfo.com")
    assert secure.routes[0].action.clusters == (
        wc("outbound|8000||httpbin.default.svc.cluster.local"),
    )
    # httpsRedirect: every virtual host (with a VirtualService or not) is one 301 to https.
    assert got["gateway|8080"].tls is None
    plain = vhosts(snap, "gateway|8080")
    assert sorted(plain) == ["bookinfo.com:8080", "other.com:8080"]
    assert all(v.routes == (HTTPS_REDIRECT,) for v in plain.values())
    assert HTTPS_REDIRECT.action.redirect == ir.Redirect(scheme="https", code=301)


def test_https_paths_from_a_text_are_kept() -> None:
    snap = compile_text(HTTPBIN + "---\n" + HTTPS % {"mode": "SIMPLE"})
    tls = listeners(snap)["gateway|8443"].tls
    assert tls == ir.TlsServer("certs/cert.pem", "/abs/key.pem", None, "TLSV1_3")


# --- TLS passthrough and TCP ------------------------------------------------------------------


PASSTHROUGH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends}
spec:
  hosts: [a.example.com, b.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: pass}
spec:
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni}
spec:
  hosts: ["*"]
  gateways: [pass]
  tls:
  - match: [{sniHosts: [a.example.com, A.other.org], port: 9443}]
    route: [{destination: {host: a.example.com, port: {number: 443}}}]
  - match: [{sniHosts: [b.example.com], port: 1234}]
    route: [{destination: {host: a.example.com}}]
  - match: [{sniHosts: ["*"]}]
    route:
    - {destination: {host: a.example.com}, weight: 1}
    - {destination: {host: b.example.com}, weight: 3}
"""


def test_passthrough_server_routes_by_sni() -> None:
    snap = compile_text(PASSTHROUGH)
    assert snap.route_tables == ()
    assert listeners(snap)["gateway|9443"] == ir.Listener(
        name="gateway|9443",
        address="127.0.0.1:9443",
        protocol="tls",
        sni_routes=(
            ir.SniRoute("sni.tls.0", ("a.example.com",), (wc("outbound|443||a.example.com"),)),
            ir.SniRoute(
                "sni.tls.2",
                ("*.example.com",),
                (wc("outbound|443||a.example.com", 1), wc("outbound|443||b.example.com", 3)),
            ),
        ),
    )


def tcp_echo() -> str:
    """The tcp-echo Service (its Deployments left out) with one EndpointSlice per version."""
    text = (TCP_ECHO / "tcp-echo-services.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Service"]
    slices = [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"tcp-echo-{v}",
                "labels": {"kubernetes.io/service-name": "tcp-echo", "version": v},
            },
            "addressType": "IPv4",
            "ports": [{"name": "tcp", "port": 9000}],
            "endpoints": [{"addresses": [f"10.0.0.{i}"]}],
        }
        for i, v in enumerate(["v1", "v2"], 1)
    ]
    return yaml.safe_dump_all(docs + slices)


def test_tcp_echo_samples() -> None:
    all_v1 = (TCP_ECHO / "tcp-echo-all-v1.yaml").read_text()
    snap = compile_text(tcp_echo() + "---\n" + all_v1)
    fqdn = "tcp-echo.default.svc.cluster.local"
    assert snap.listeners == (
        ir.Listener(
            name="gateway|31400",
            address="127.0.0.1:31400",
            protocol="tcp",
            tcp_routes=(ir.TcpRoute("tcp-echo.tcp.0", (wc(f"outbound|9000|v1|{fqdn}"),)),),
        ),
    )
    clusters = {c.name: c for c in snap.clusters}
    assert [e.address for e in clusters[f"outbound|9000|v2|{fqdn}"].endpoints] == ["10.0.0.2:9000"]

    # 80/20: the Gateway and DestinationRule of the first sample, the VirtualService of the second.
    docs = [d for d in yaml.safe_load_all(all_v1) if d and d["kind"] != "VirtualService"]
    text = "---\n".join(
        [tcp_echo(), yaml.safe_dump_all(docs), (TCP_ECHO / "tcp-echo-20-v2.yaml").read_text()]
    )
    [listener] = compile_text(text).listeners
    assert listener.tcp_routes == (
        ir.TcpRoute(
            "tcp-echo.tcp.0",
            (wc(f"outbound|9000|v1|{fqdn}", 80), wc(f"outbound|9000|v2|{fqdn}", 20)),
        ),
    )
    # As a sidecar: plain TCP listeners per port, the gateway-only VirtualService ignored.
    sidecar = compile_text(text, CompileOptions())
    tcp = listeners(sidecar)["outbound|tcp|9000"]
    assert tcp.tcp_routes == (ir.TcpRoute("default", (wc(f"outbound|9000||{fqdn}"),)),)
    assert "gateway|31400" not in listeners(sidecar)


# --- sidecar TLS ports ----------------------------------------------------------------------


SIDECAR_TLS = """\
apiVersion: v1
kind: Service
metadata: {name: vault}
spec:
  clusterIP: 10.96.0.7
  ports: [{name: https-api, port: 8200}, {name: tls-raft, port: 8201}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec:
  hosts: [api.example.com, www.example.com, db.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{sniHosts: [api.example.com], port: 443}]
    route: [{destination: {host: www.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vault}
spec:
  hosts: [vault]
  tls:
  - match: [{sniHosts: [vault], port: 8200}]
    route: [{destination: {host: vault, port: {number: 8200}}}]
  tcp:
  - route: [{destination: {host: vault, port: {number: 8201}}}]
"""


def test_sidecar_tls_ports_route_by_sni() -> None:
    snap = compile_text(SIDECAR_TLS, CompileOptions())
    got = listeners(snap)
    assert sorted(got) == [
        "outbound",
        "outbound|tls|443",
        "outbound|tls|8200",
        "outbound|tls|8201",
    ]
    vault = "vault.default.svc.cluster.local"
    assert got["outbound|tls|8200"] == ir.Listener(
        name="outbound|tls|8200",
        address="10.96.0.7:8200",
        protocol="tls",
        sni_routes=(
            ir.SniRoute("vault.tls.0", (vault,), (wc(f"outbound|8200||{vault}"),)),
            ir.SniRoute("default", ("*",), (wc(f"outbound|8200||{vault}"),)),
        ),
    )
    # The tls[] rule is for port 8200 only; tcp[] rules do not apply to TLS ports.
    assert got["outbound|tls|8201"].sni_routes == (
        ir.SniRoute("default", ("*",), (wc(f"outbound|8201||{vault}"),)),
    )
    # Three services share 443: the VirtualService rule, then one route per other host.
    assert got["outbound|tls|443"] == ir.Listener(
        name="outbound|tls|443",
        address="127.0.0.1:443",
        protocol="tls",
        sni_routes=(
            ir.SniRoute("api.tls.0", ("api.example.com",), (wc("outbound|443||www.example.com"),)),
            ir.SniRoute(
                "db.example.com", ("db.example.com",), (wc("outbound|443||db.example.com"),)
            ),
            ir.SniRoute(
                "www.example.com", ("www.example.com",), (wc("outbound|443||www.example.com"),)
            ),
        ),
    )


# --- validation ---------------------------------------------------------------------------


def test_gateway_problems() -> None:
    got = problems(
        """\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: bad}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [a.com]
            tls:
              mode: MUTUAL
              serverCertificate: c.pem
              privateKey: k.pem
              credentialName: secret
          - port: {number: 444, name: https, protocol: HTTPS}
            hosts: []
          - port: {number: 445, name: x, protocol: SPDY}
            hosts: [a.com]
          - port: {number: 446, name: p, protocol: HTTPS}
            hosts: ["a/b/c", "/x"]
            bind: 10.0.0.1.2
            tls: {mode: AUTO_PASSTHROUGH}
          - port: {number: 447, name: h, protocol: HTTP}
            hosts: ["*"]
            tls: {mode: SIMPLE, minProtocolVersion: TLSV1_1}
          - port: {number: 448, name: t, protocol: TLS}
            hosts: ["*"]
            tls:
              mode: SIMPLE
              minProtocolVersion: TLSV1_3
              maxProtocolVersion: TLSV1_2
        """
    )
    assert got == [
        "g.yaml:13: Gateway/bad: $.spec.servers[0].tls.credentialName: not implemented yet",
    ]
    got = problems(
        """\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: bad}
        spec:
          servers:
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [a.com]
            tls:
              mode: MUTUAL
              serverCertificate: c.pem
          - port: {number: 444, name: https, protocol: HTTPS}
            hosts: []
          - port: {number: 445, name: x, protocol: SPDY}
            hosts: [a.com]
          - port: {number: 446, name: p, protocol: HTTPS}
            hosts: ["a/b/c", "/x"]
            bind: 10.0.0.1.2
            tls: {mode: AUTO_PASSTHROUGH}
          - port: {number: 447, name: h, protocol: HTTP}
            hosts: ["*"]
            tls: {mode: SIMPLE}
          - port: {number: 448, name: t, protocol: TLS}
            hosts: ["*"]
            tls: {mode: SIMPLE}
          - port: {number: 449, name: s, protocol: HTTPS}
            hosts: ["*"]
            tls:
              mode: SIMPLE
              serverCertificate: c.pem
              privateKey: k.pem
              minProtocolVersion: TLSV1_3
              maxProtocolVersion: TLSV1_2
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: zero}
        spec:
          servers:
          - port: {number: 0, name: zero, protocol: TCP}
            hosts: ["*"]
        """
    )
    head = "g.yaml:{}: Gateway/bad: $.spec.servers"
    assert got == [
        f"{head.format(8)}[0].tls: privateKey is required with tls.mode MUTUAL",
        f"{head.format(8)}[0].tls: caCertificates is required with tls.mode MUTUAL",
        f"{head.format(11)}[1]: an HTTPS server needs tls settings",
        f"{head.format(12)}[1].hosts: at least one host is required",
        f'{head.format(13)}[2].port.protocol: unknown protocol "SPDY" (one of GRPC, GRPC-WEB,'
        " HTTP, HTTP2, HTTPS, MONGO, MYSQL, REDIS, TCP, TLS)",
        f'{head.format(16)}[3].hosts[0]: "a/b/c" must be dnsName or namespace/dnsName',
        f'{head.format(16)}[3].hosts[1]: "/x" must be dnsName or namespace/dnsName',
        f'{head.format(17)}[3].bind: "10.0.0.1.2" is not an IP address',
        f"{head.format(18)}[3].tls.mode: tls.mode AUTO_PASSTHROUGH is not implemented yet",
        f"{head.format(21)}[4].tls.mode: tls.mode applies to HTTPS and TLS servers, not HTTP",
        f"{head.format(24)}[5].tls.mode: tls.mode SIMPLE on a TLS server is not implemented yet",
        f"{head.format(31)}[6].tls.minProtocolVersion: minProtocolVersion TLSV1_3 is above TLSV1_2",
        f"{head.format(32)}[6].tls.maxProtocolVersion: maxProtocolVersion TLSV1_2 is not"
        " implemented yet",
        "g.yaml:39: Gateway/zero: $.spec.servers[0].port.number: must be between 1 and 65535,"
        " got 0",
    ]


def test_old_tls_versions_are_not_implemented() -> None:
    got = problems(
        """\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: old}
        spec:
          servers:
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: ["*"]
            tls: {mode: PASSTHROUGH, minProtocolVersion: TLSV1_1, maxProtocolVersion: TLS_AUTO}
        """
    )
    assert got == [
        "g.yaml:8: Gateway/old: $.spec.servers[0].tls.minProtocolVersion: minProtocolVersion"
        " TLSV1_1 is not implemented yet (TLSV1_2 is the lowest)",
    ]


def test_gateway_port_conflicts() -> None:
    got = problems(
        """\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: one}
        spec:
          servers:
          - port: {number: 8080, name: http, protocol: HTTP}
            hosts: ["*"]
          - port: {number: 8443, name: https, protocol: HTTPS}
            hosts: [a.com]
            tls: {mode: SIMPLE, serverCertificate: a.pem, privateKey: a.key}
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: two}
        spec:
          servers:
          - port: {number: 8080, name: tcp, protocol: TCP}
            hosts: ["*"]
          - port: {number: 8443, name: https, protocol: HTTPS}
            hosts: [b.com]
            tls: {mode: SIMPLE, serverCertificate: b.pem, privateKey: b.key}
          - port: {number: 8080, name: grpc, protocol: GRPC}
            hosts: [c.com]
            bind: 127.0.0.2
          - port: {number: 8443, name: https, protocol: HTTPS}
            hosts: [a.com]
            tls: {mode: SIMPLE, serverCertificate: a.pem, privateKey: a.key}
        """
    )
    assert got == [
        "g.yaml:17: Gateway/two: $.spec.servers[0].port.protocol: port 8080: TCP (tcp) conflicts"
        " with HTTP (http) of default/one servers[0]",
        "g.yaml:21: Gateway/two: $.spec.servers[1].tls: port 8443: HTTPS servers with TLS"
        " settings different from default/one servers[1] are not implemented yet",
        "g.yaml:24: Gateway/two: $.spec.servers[2].bind: port 8080: bind 127.0.0.2 beside"
        " - of default/one servers[0] on one port is not implemented yet",
    ]


def test_tls_route_problems() -> None:
    got = problems(
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v}
        spec:
          hosts: ["*.example.com", reviews]
          tls:
          - match: [{sniHosts: [a.example.com, reviews.default.svc.cluster.local, b.other.com]}]
            route: [{destination: {host: a}}]
          - route: [{destination: {host: a}}, {destination: {host: b}}]
          - match: [{sniHosts: []}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: w}
        spec:
          hosts: ["*.example.com"]
          tls:
          - match: [{sniHosts: [x.example.com], sourceLabels: {a: b}, gateways: [a/b/c]}]
            route: [{destination: {host: a}}]
        """
    )
    assert got == [
        'g.yaml:7: VirtualService/v: $.spec.tls[0].match[0].sniHosts[2]: sniHost "b.other.com"'
        " is not within the VirtualService hosts",
        "g.yaml:9: VirtualService/v: $.spec.tls[1]: match is required",
        "g.yaml:9: VirtualService/v: $.spec.tls[1].route: with more than one destination the"
        " total weight must be > 0",
        "g.yaml:10: VirtualService/v: $.spec.tls[2]: route is required",
        "g.yaml:10: VirtualService/v: $.spec.tls[2].match[0].sniHosts: at least one sniHost is"
        " required",
        'g.yaml:18: VirtualService/w: $.spec.tls[0].match[0].gateways[0]: "a/b/c" must be mesh,'
        " a Gateway name or namespace/name",
    ]


def test_tls_services_may_share_a_port_but_not_with_tcp() -> None:
    load_config_text(textwrap.dedent(SIDECAR_TLS))
    got = problems(
        SIDECAR_TLS
        + """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: plain}
spec:
  hosts: [plain.example.com]
  ports: [{number: 443, name: tcp, protocol: TCP}]
  resolution: DNS
"""
    )
    assert got == [
        "g.yaml:41: ServiceEntry/plain: $.spec.ports[0].number: TCP port 443 of plain.example.com"
        " beside api.example.com: TCP services sharing a port (told apart by address)"
        " are not implemented yet",
    ]
