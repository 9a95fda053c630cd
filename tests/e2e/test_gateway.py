"""`meshfast run --gateway`: Istio Gateways unchanged — HTTP, HTTPS SIMPLE and
MUTUAL, httpsRedirect, TLS PASSTHROUGH by SNI, and TCP (the tcp-echo samples)."""

from __future__ import annotations

import collections
import itertools
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..certs import HttpsServer, MiniCA
from ..samples import BOOKINFO_NETWORKING, SAMPLES, YAML_TYPE
from .conftest import free_port, service_entry

_ips = itertools.count(1)


@pytest.fixture
def gw_ip() -> str:
    """A loopback address of the test's own, so fixed sample ports never collide."""
    return f"127.77.{next(_ips)}.1"


def gateway(sidecar, config: str, ip: str):  # type: ignore[no-untyped-def]
    return sidecar(config, "--gateway", "--gateway-bind", ip)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)


def test_bookinfo_gateway_sample_unchanged(echo, sidecar, gw_ip: str) -> None:  # type: ignore[no-untyped-def]
    page = echo("productpage-v1")
    config = (
        service_entry("productpage", 9080, [(page.address, {"version": "v1"})])
        + "---\n"
        + (BOOKINFO_NETWORKING / "bookinfo-gateway.yaml").read_text()
    )
    gateway(sidecar, config, gw_ip)
    base = f"http://{gw_ip}:8080"
    for path in ("/productpage", "/static/x.css", "/login", "/api/v1/products/1"):
        r = httpx.get(base + path, headers={"host": "bookinfo.example.com"})
        assert r.status_code == 200, path
        assert r.json()["name"] == "productpage-v1"
    r = httpx.get(base + "/admin", headers={"host": "bookinfo.example.com"})
    assert (r.status_code, r.headers["x-meshfast-flags"]) == (404, "NR")


@pytest.fixture
def pki(tmp_path: Path) -> tuple[MiniCA, Path]:
    ca = MiniCA(tmp_path)
    ca.issue("server", ["gw.example.com", "*.example.com"])
    ca.issue("client", ["client.example.com"], client=True)
    return ca, tmp_path


def tls_gateway(port: int, mode: str, extra: str = "") -> str:
    ca_line = "\n      caCertificates: ca.pem" if mode == "MUTUAL" else ""
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: {port}, name: https, protocol: HTTPS}}
    hosts: ["gw.example.com"]
    tls:
      mode: {mode}
      serverCertificate: server.pem
      privateKey: server-key.pem{ca_line}
{extra}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: gw}}
spec:
  hosts: ["gw.example.com"]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.example.com}}}}]
"""


def test_https_simple_terminates_tls_with_alpn(
    echo, sidecar, pki, gw_ip: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ca, _ = pki
    web = echo("web")
    port = free_port()
    config = (
        service_entry("web.example.com", 80, [(web.address, {})])
        + "---\n"
        + tls_gateway(port, "SIMPLE")
    )
    # Certificates are named relative to the YAML file, which lives next to them.
    gateway(sidecar, config, gw_ip)
    url = f"https://gw.example.com:{port}/secure"
    resolve = f"gw.example.com:{port}:{gw_ip}"
    for proto, flag in (("HTTP/1.1", "--http1.1"), ("HTTP/2", "--http2")):
        out = curl(flag, "-i", "--resolve", resolve, "--cacert", str(ca.path), url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(proto), out.stdout[:40]
        assert '"name":"web"' in out.stdout
    # A client that does not trust our CA refuses the handshake.
    assert curl("--resolve", resolve, url).returncode != 0


def test_https_mutual_requires_a_client_certificate(echo, sidecar, pki, gw_ip: str) -> None:  # type: ignore[no-untyped-def]
    ca, folder = pki
    web = echo("web")
    port = free_port()
    config = (
        service_entry("web.example.com", 80, [(web.address, {})])
        + "---\n"
        + tls_gateway(port, "MUTUAL")
    )
    gateway(sidecar, config, gw_ip)
    url = f"https://gw.example.com:{port}/m"
    base = ["--resolve", f"gw.example.com:{port}:{gw_ip}", "--cacert", str(ca.path)]
    ok = curl(
        *base, "--cert", str(folder / "client.pem"), "--key", str(folder / "client-key.pem"), url
    )
    assert ok.returncode == 0, ok.stderr
    assert '"name":"web"' in ok.stdout
    assert curl(*base, url).returncode != 0


def test_https_redirect(echo, sidecar, gw_ip: str) -> None:  # type: ignore[no-untyped-def]
    web = echo("web")
    port = free_port()
    config = (
        service_entry("web.example.com", 80, [(web.address, {})])
        + f"""---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["gw.example.com"]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: gw}}
spec:
  hosts: ["gw.example.com"]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: web.example.com}}}}]
"""
    )
    gateway(sidecar, config, gw_ip)
    r = httpx.get(f"http://{gw_ip}:{port}/path?q=1", headers={"host": "gw.example.com"})
    assert r.status_code == 301
    assert r.headers["location"] == "https://gw.example.com/path?q=1"


@pytest.fixture
def tls_upstreams(pki) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Two HTTPS servers (a.example.com, b.example.com) that say who they are."""
    ca, _ = pki
    with (
        HttpsServer(ca, "a.example.com", lambda _: b"a") as a,
        HttpsServer(ca, "b.example.com", lambda _: b"b") as b,
    ):
        yield {"a": a.address, "b": b.address}


def test_tls_passthrough_routes_by_sni(sidecar, pki, tls_upstreams, gw_ip: str) -> None:  # type: ignore[no-untyped-def]
    ca, _ = pki
    port = free_port()
    config = (
        service_entry("a.internal", 443, [(tls_upstreams["a"], {})], protocol="TLS")
        + "---\n"
        + service_entry("b.internal", 443, [(tls_upstreams["b"], {})], protocol="TLS")
        + f"""---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: ["*.example.com"]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: sni}}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match: [{{port: {port}, sniHosts: [a.example.com]}}]
    route: [{{destination: {{host: a.internal, port: {{number: 443}}}}}}]
  - match: [{{port: {port}, sniHosts: [b.example.com]}}]
    route: [{{destination: {{host: b.internal, port: {{number: 443}}}}}}]
"""
    )
    gateway(sidecar, config, gw_ip)
    for name in ("a", "b", "a"):
        host = f"{name}.example.com"
        out = curl(
            "--resolve",
            f"{host}:{port}:{gw_ip}",
            "--cacert",
            str(ca.path),
            f"https://{host}:{port}/",
        )
        assert (out.returncode, out.stdout) == (0, name), out.stderr


class _TcpEcho(socketserver.ThreadingTCPServer):
    """Istio's tcp-echo-server: answers each line with `<prefix> <line>`."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, prefix: str) -> None:
        prefix_bytes = prefix.encode()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    self.wfile.write(prefix_bytes + b" " + line)

        super().__init__(("127.0.0.1", 0), Handler)


def tcp_echo_mesh(v1: int, v2: int) -> str:
    slices = "".join(
        f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: tcp-echo-{v}
  labels: {{kubernetes.io/service-name: tcp-echo, version: {v}}}
addressType: IPv4
ports: [{{name: tcp, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"""
        for v, port in (("v1", v1), ("v2", v2))
    )
    return (
        """apiVersion: v1
kind: Service
metadata: {name: tcp-echo}
spec:
  ports: [{name: tcp, port: 9000}]
  selector: {app: tcp-echo}
"""
        + slices
    )


def test_tcp_echo_samples_shift_traffic(sidecar, gw_ip: str) -> None:  # type: ignore[no-untyped-def]
    servers = [_TcpEcho("one"), _TcpEcho("two")]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        samples = SAMPLES / "samples" / "tcp-echo"
        mesh = tcp_echo_mesh(servers[0].server_address[1], servers[1].server_address[1])
        all_v1 = (samples / "tcp-echo-all-v1.yaml").read_text()
        car = gateway(sidecar, mesh + "---\n" + all_v1, gw_ip)

        def shares(n: int) -> dict[str, float]:
            seen: collections.Counter[str] = collections.Counter()
            for i in range(n):
                with socket.create_connection((gw_ip, 31400), timeout=10) as s:
                    s.sendall(b"hello %d\n" % i)
                    reply = s.makefile("rb").readline().decode()
                assert reply.endswith(f"hello {i}\n"), reply
                seen[reply.split()[0]] += 1
            return {k: v / n for k, v in seen.items()}

        assert shares(200) == {"one": 1.0}
        # Shift 20% to v2 with the second sample, as the Istio task does.
        shifted = mesh + "---\n" + all_v1.split("kind: VirtualService")[0].rsplit("---", 1)[0]
        shifted += "---\n" + (samples / "tcp-echo-20-v2.yaml").read_text()
        r = httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=shifted, timeout=30)
        assert r.status_code == 200, r.text
        got = shares(2000)
        assert abs(got["one"] - 0.8) <= 0.03, got
        assert abs(got["two"] - 0.2) <= 0.03, got
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
