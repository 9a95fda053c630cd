"""DestinationRule `tls`: TLS origination (SIMPLE and MUTUAL) to HTTPS upstreams,
the egress pattern Istio documents (plain HTTP from the app, TLS from the proxy)."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..certs import HttpsServer, MiniCA
from .conftest import service_entry


@pytest.fixture
def ca(tmp_path: Path) -> MiniCA:
    return MiniCA(tmp_path)


def _reply(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    peer = handler.connection.getpeercert()  # type: ignore[attr-defined]
    return f"tls ok host={handler.headers['host']} client_cert={bool(peer)}".encode()


@pytest.fixture
def simple_upstream(ca: MiniCA) -> Iterator[int]:
    with HttpsServer(ca, "secure.example.com", _reply) as server:
        yield server.port


@pytest.fixture
def mutual_upstream(ca: MiniCA) -> Iterator[int]:
    with HttpsServer(ca, "secure.example.com", _reply, require_client_cert=True) as server:
        yield server.port


def mesh(port: int, tls: str) -> str:
    # The app speaks plain HTTP to port 80; the endpoint's real port speaks TLS.
    return (
        service_entry("secure.example.com", 80, [(f"127.0.0.1:{port}", {})])
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: secure.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {tls}
"""
    )


def get(car) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(car.url, headers={"host": "secure.example.com"}, timeout=30)


def test_simple_tls_origination_with_auto_sni(sidecar, simple_upstream: int) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(simple_upstream, "{mode: SIMPLE, caCertificates: ca.pem}"))
    r = get(car)
    assert r.status_code == 200, r.text
    assert r.text.startswith("tls ok host=secure.example.com")


def test_untrusted_upstream_certificate_is_a_connect_failure(
    sidecar, simple_upstream: int, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "other").mkdir()
    other = MiniCA(tmp_path / "other", name="another CA")
    car = sidecar(mesh(simple_upstream, f"{{mode: SIMPLE, caCertificates: {other.path}}}"))
    r = get(car)
    assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "UF")


def test_subject_alt_names_must_match(sidecar, simple_upstream: int) -> None:  # type: ignore[no-untyped-def]
    bad = "{mode: SIMPLE, caCertificates: ca.pem, subjectAltNames: [other.example.com]}"
    assert get(sidecar(mesh(simple_upstream, bad))).status_code == 503
    good = "{mode: SIMPLE, caCertificates: ca.pem, subjectAltNames: [secure.example.com]}"
    assert get(sidecar(mesh(simple_upstream, good))).status_code == 200


def test_mutual_tls_origination_presents_the_client_certificate(
    sidecar, mutual_upstream: int, ca: MiniCA
) -> None:  # type: ignore[no-untyped-def]
    ca.issue("client", ["client.example.com"], client=True)
    tls = (
        "{mode: MUTUAL, caCertificates: ca.pem, clientCertificate: client.pem,"
        " privateKey: client-key.pem}"
    )
    r = get(sidecar(mesh(mutual_upstream, tls)))
    assert r.status_code == 200, r.text
    assert "client_cert=True" in r.text
    # Without a client certificate the upstream refuses the handshake.
    r = get(sidecar(mesh(mutual_upstream, "{mode: SIMPLE, caCertificates: ca.pem}")))
    assert r.status_code == 503
