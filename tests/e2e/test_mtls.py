"""Mesh mTLS end to end: `meshfast ca`, `--certs`, DestinationRule ISTIO_MUTUAL from one
sidecar to another's PERMISSIVE inbound listener, SPIFFE checks, and the client identity
forwarded to the app and to filters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from meshfast.security import ca

from .conftest import free_port, service_entry

ROOT_ID = "spiffe://cluster.local/ns/default/sa"

PEER_FILTER = """
from meshfast.filters import HttpFilter


class Peer(HttpFilter):
    def on_request(self, request):
        request.headers["x-peer-identity"] = request.identity or "none"
        return None
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mesh CA (made by the CLI), identities for productpage and reviews, and a
    productpage identity from a second, unrelated CA."""
    base = tmp_path_factory.mktemp("mesh")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "meshfast", "ca", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("init", "--dir", str(base / "ca"))
    out = cli(
        "issue",
        "--dir",
        str(base / "ca"),
        "--namespace",
        "default",
        "--service-account",
        "productpage",
        "--out",
        str(base / "productpage"),
    )
    assert f"{ROOT_ID}/productpage" in out
    ca.issue(base / "ca", base / "reviews", namespace="default", service_account="reviews")
    ca.init_ca(base / "other-ca")
    ca.issue(
        base / "other-ca", base / "intruder", namespace="default", service_account="productpage"
    )
    return base


SERVER_CONFIG = """---
apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata: {name: peer}
spec:
  python: "peerfilter:Peer"
"""


def client_config(inbound: str, tls: str = "{mode: ISTIO_MUTUAL}") -> str:
    return (
        service_entry("reviews.default.svc.cluster.local", 9080, [(inbound, {})])
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
    tls: {tls}
"""
    )


@pytest.fixture
def server(echo, sidecar, certs: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The reviews workload: an echo app behind a sidecar with the reviews identity."""
    (tmp_path / "peerfilter.py").write_text(PEER_FILTER)
    app = echo("reviews-app")
    inbound = f"127.0.0.1:{free_port()}"
    sidecar(
        SERVER_CONFIG,
        "--app",
        app.address,
        "--inbound",
        inbound,
        "--certs",
        str(certs / "reviews"),
    )
    return inbound


def get(car) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(f"{car.url}/", headers={"host": "reviews:9080"}, timeout=30)


def test_istio_mutual_reaches_the_peer_with_both_identities(
    sidecar, server: str, certs: Path
) -> None:  # type: ignore[no-untyped-def]
    client = sidecar(client_config(server), "--certs", str(certs / "productpage"))
    r = get(client)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["name"] == "reviews-app"
    # The server sidecar verified the client certificate and says whose it was.
    assert seen["headers"]["x-forwarded-client-cert"] == (
        f"By={ROOT_ID}/reviews;URI={ROOT_ID}/productpage"
    )
    # Filters on the server side see the peer's identity.
    assert seen["headers"]["x-peer-identity"] == f"{ROOT_ID}/productpage"


def test_permissive_inbound_serves_plaintext_and_strips_a_forged_identity(server: str) -> None:
    r = httpx.get(
        f"http://{server}/",
        headers={"x-forwarded-client-cert": f"URI={ROOT_ID}/admin"},
        timeout=30,
    )
    assert r.status_code == 200
    headers = r.json()["headers"]
    assert "x-forwarded-client-cert" not in headers
    assert headers["x-peer-identity"] == "none"


def test_subject_alt_names_pin_the_server_identity(sidecar, server: str, certs: Path) -> None:  # type: ignore[no-untyped-def]
    good = f"{{mode: ISTIO_MUTUAL, subjectAltNames: ['{ROOT_ID}/reviews']}}"
    bad = f"{{mode: ISTIO_MUTUAL, subjectAltNames: ['{ROOT_ID}/ratings']}}"
    ok = sidecar(client_config(server, good), "--certs", str(certs / "productpage"))
    assert get(ok).status_code == 200
    wrong = sidecar(client_config(server, bad), "--certs", str(certs / "productpage"))
    r = get(wrong)
    assert r.status_code == 503
    assert r.headers["x-meshfast-flags"] == "UF"


def test_an_identity_from_another_ca_is_refused(sidecar, server: str, certs: Path) -> None:  # type: ignore[no-untyped-def]
    intruder = sidecar(client_config(server), "--certs", str(certs / "intruder"))
    r = get(intruder)
    assert r.status_code == 503
    assert r.headers["x-meshfast-flags"] == "UF"


def test_istio_mutual_without_certs_refuses_to_start(tmp_path: Path, server: str) -> None:
    path = tmp_path / "client.yaml"
    path.write_text(client_config(server))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshfast",
            "run",
            "-c",
            str(path),
            "--admin",
            "127.0.0.1:0",
            "--outbound",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "ISTIO_MUTUAL needs the sidecar's mesh identity" in done.stderr
    assert "--certs" in done.stderr


def test_bookinfo_all_mtls_sample_unchanged(echo, sidecar, certs: Path) -> None:  # type: ignore[no-untyped-def]
    """destination-rule-all-mtls.yaml and virtual-service-all-v1.yaml as Istio ships them, on
    a mesh whose endpoints are sidecars (with the reviews identity) in front of echo apps."""
    from ..samples import BOOKINFO_NETWORKING as SAMPLES

    servers = []
    for i in range(4):
        inbound = f"127.0.0.1:{free_port()}"
        sidecar(
            "",
            "--app",
            echo(f"app-{i}").address,
            "--inbound",
            inbound,
            "--certs",
            str(certs / "reviews"),
        )
        servers.append(inbound)
    versions = {
        "productpage": ["v1"],
        "details": ["v1", "v2"],
        "reviews": ["v1", "v2", "v3"],
        "ratings": ["v1", "v2", "v2-mysql", "v2-mysql-vm"],
    }
    services = "---\n".join(
        service_entry(svc, 9080, [(servers[i], {"version": v}) for i, v in enumerate(vs)])
        for svc, vs in versions.items()
    )
    config = "\n---\n".join(
        [
            services,
            (SAMPLES / "destination-rule-all-mtls.yaml").read_text(),
            (SAMPLES / "virtual-service-all-v1.yaml").read_text(),
        ]
    )
    client = sidecar(config, "--certs", str(certs / "productpage"))
    for svc in versions:
        for _ in range(5):
            r = httpx.get(f"{client.url}/", headers={"host": f"{svc}:9080"}, timeout=30)
            assert r.status_code == 200, (svc, r.text)
            seen = r.json()
            assert seen["name"] == "app-0", svc  # v1 only
            assert seen["headers"]["x-forwarded-client-cert"].endswith(f"URI={ROOT_ID}/productpage")
