"""AuthorizationPolicy end to end: a reviews workload (echo app behind a sidecar with the
reviews identity from `meshfast ca`) whose policies are enforced on its inbound listener,
called over ISTIO_MUTUAL by sidecars with other identities, and in plaintext."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from meshfast.security import ca

from ..samples import BOOKINFO_NETWORKING
from .conftest import free_port, service_entry
from .test_http2 import H2Client
from .test_mtls import client_config

ROOT_ID = "spiffe://cluster.local/ns/default/sa"

POLICIES = """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-only, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
  - to: [{operation: {paths: [/health]}}]
    when: [{key: "request.headers[x-probe]", values: ["kubelet*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-namespace, namespace: prod}
spec:
  action: DENY
  rules: [{}]
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("mesh")
    ca.init_ca(base / "ca")
    for sa in ("reviews", "frontend", "stranger"):
        ca.issue(base / "ca", base / sa, namespace="default", service_account=sa)
    return base


@pytest.fixture
def reviews(echo, sidecar, certs: Path):  # type: ignore[no-untyped-def]
    """The reviews workload's sidecar and its inbound address."""
    inbound = f"127.0.0.1:{free_port()}"
    car = sidecar(
        POLICIES,
        "--app",
        echo("reviews-app").address,
        "--inbound",
        inbound,
        "--certs",
        str(certs / "reviews"),
        "--namespace",
        "default",
        "--labels",
        "app=reviews,version=v1",
    )
    return car, inbound


def call(car, path: str = "/", **headers: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(f"{car.url}{path}", headers={"host": "reviews:9080", **headers}, timeout=30)


def test_only_the_allowed_principal_gets_through(sidecar, reviews, certs: Path) -> None:  # type: ignore[no-untyped-def]
    server, inbound = reviews
    frontend = sidecar(client_config(inbound), "--certs", str(certs / "frontend"))
    stranger = sidecar(client_config(inbound), "--certs", str(certs / "stranger"))

    ok = call(frontend)
    assert ok.status_code == 200, ok.text
    assert ok.json()["name"] == "reviews-app"
    assert ok.json()["headers"]["x-forwarded-client-cert"].endswith(f"URI={ROOT_ID}/frontend")

    denied = call(stranger)
    assert (denied.status_code, denied.text) == (403, "RBAC: access denied")

    # Plaintext (PERMISSIVE) has no identity: denied too, with meshfast's flag on the reply.
    plain = httpx.get(f"http://{inbound}/", timeout=30)
    assert (plain.status_code, plain.text) == (403, "RBAC: access denied")
    assert plain.headers["x-meshfast-flags"] == "RBAC"

    stats = server.stats()
    assert stats["listeners"]["inbound"]["response_flags"]["RBAC"] == 2
    policies = stats["authz_policies"]
    assert policies["default/frontend-only"]["allowed"] == 1
    assert policies["(no ALLOW policy matched)"]["denied"] == 2
    prom = httpx.get(f"{server.admin}/stats/prometheus", timeout=10).text
    assert (
        'meshfast_authz_policy_requests_total{policy="default/frontend-only",result="allowed"} 1'
        in prom
    )
    # Policies of another workload or namespace are not this sidecar's.
    assert "default/other-workload" not in policies
    assert "prod/other-namespace" not in policies


def test_deny_on_a_path_wins_over_the_allowed_principal(sidecar, reviews, certs: Path) -> None:  # type: ignore[no-untyped-def]
    server, inbound = reviews
    frontend = sidecar(client_config(inbound), "--certs", str(certs / "frontend"))
    assert call(frontend, "/admin").status_code == 200  # "/admin/*" is a prefix of /admin/
    r = call(frontend, "/admin/users")
    assert (r.status_code, r.text) == (403, "RBAC: access denied")
    # The path matched is the normalized one: dot segments cannot walk around the DENY.
    plain = httpx.get(f"http://{inbound}/public/../admin/users", timeout=30)
    assert plain.status_code == 403
    assert server.stats()["authz_policies"]["default/no-admin"]["denied"] == 2


def test_a_when_condition_on_a_header(reviews) -> None:  # type: ignore[no-untyped-def]
    _, inbound = reviews
    url = f"http://{inbound}/health"
    assert httpx.get(url, headers={"x-probe": "kubelet/1.31"}, timeout=30).status_code == 200
    assert httpx.get(url, headers={"x-probe": "curl"}, timeout=30).status_code == 403
    assert httpx.get(url, timeout=30).status_code == 403
    # The header alone is not enough on another path.
    other = httpx.get(f"http://{inbound}/x", headers={"x-probe": "kubelet"}, timeout=30)
    assert other.status_code == 403


def test_http2_requests_are_checked_too(reviews) -> None:  # type: ignore[no-untyped-def]
    _, inbound = reviews
    client = H2Client(inbound)
    try:
        denied = client.request("/", "reviews:9080")
        ok = client.request("/health", "reviews:9080", extra=[("x-probe", "kubelet")])
        got = client.collect({denied, ok})
    finally:
        client.close()
    assert got[denied]["headers"][":status"] == "403"
    assert got[denied]["headers"]["x-meshfast-flags"] == "RBAC"
    assert got[denied]["body"] == b"RBAC: access denied"
    assert got[ok]["headers"][":status"] == "200"


def tcp_workload(port: int, app: str, policy: str) -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  ingress:
  - port: {{number: {port}, protocol: TCP, name: tcp}}
    defaultEndpoint: {app}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: tcp-policy, namespace: default}}
spec:
{policy}
"""


def raw_get(address: str) -> bytes:
    """One HTTP/1.1 request over a raw TCP connection: what came back before it closed
    (closed with our request unread, the kernel resets it: that is a close too)."""
    host, port = address.rsplit(":", 1)
    data = b""
    with socket.create_connection((host, int(port)), timeout=30) as s:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n")
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


@pytest.mark.parametrize(
    ("policy", "passes"),
    [
        # DENY: the HTTP-only `methods` is dropped, `ports` alone denies the port (wider deny).
        (
            '  action: DENY\n  rules: [{to: [{operation: {methods: [POST], ports: ["PORT"]}}]}]',
            False,
        ),
        # ALLOW: a rule with an HTTP-only field matches nothing on TCP (narrower allow).
        ("  rules: [{to: [{operation: {methods: [GET]}}]}]", False),
        ('  rules: [{to: [{operation: {ports: ["PORT"]}}]}]', True),
        ('  action: DENY\n  rules: [{to: [{operation: {ports: ["1"]}}]}]', True),
    ],
)
def test_tcp_ports_get_istios_tcp_reading(echo, sidecar, policy: str, passes: bool) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    app = echo("tcp-app").address
    car = sidecar(
        tcp_workload(port, app, policy.replace("PORT", str(port))),
        "--inbound",
        f"127.0.0.1:{free_port()}",
    )
    got = raw_get(f"127.0.0.1:{port}")
    if passes:
        assert got.startswith(b"HTTP/1.1 200"), got
    else:
        assert got == b""
        listener = car.stats()["listeners"][f"inbound|{port}"]
        assert listener["response_flags"]["RBAC"] == 1


GATEWAY_POLICIES = """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: loopback-only, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{from: [{source: {notIpBlocks: [127.0.0.0/8]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-api-on-8080, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/api/*"]}}]
    when: [{key: destination.port, values: ["8080"]}]
"""


def test_an_ingress_gateway_enforces_its_policies(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    page = echo("productpage-v1")
    config = (
        service_entry("productpage", 9080, [(page.address, {"version": "v1"})])
        + "---\n"
        + (BOOKINFO_NETWORKING / "bookinfo-gateway.yaml").read_text()
        + GATEWAY_POLICIES
    )
    ip = "127.78.0.1"
    car = sidecar(config, "--gateway", "--gateway-bind", ip, "--labels", "istio=ingressgateway")
    base, host = f"http://{ip}:8080", {"host": "bookinfo.example.com"}
    assert httpx.get(f"{base}/productpage", headers=host, timeout=30).status_code == 200
    r = httpx.get(f"{base}/api/v1/products/1", headers=host, timeout=30)
    assert (r.status_code, r.headers["x-meshfast-flags"]) == (403, "RBAC")
    assert car.stats()["authz_policies"]["default/no-api-on-8080"]["denied"] == 1
