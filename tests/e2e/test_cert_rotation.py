"""Certificate rotation: new files under `--certs` are served to the next handshake while a
connection opened before stays up; `--ca` renews the sidecar's certificate at half its
lifetime."""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509

from meshfast.security import ca

from .conftest import free_port

SIDECAR = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec: {}\n"
DEADLINE_S = 60.0


def _mesh(tmp_path: Path, lifetime: datetime.timedelta) -> tuple[Path, Path, Path]:
    """A CA, the server's identity (valid `lifetime`) and a client's."""
    ca.init_ca(tmp_path / "ca")
    ca.issue(
        tmp_path / "ca",
        tmp_path / "server",
        namespace="default",
        service_account="reviews",
        lifetime=lifetime,
    )
    ca.issue(tmp_path / "ca", tmp_path / "client", namespace="default", service_account="web")
    return tmp_path / "ca", tmp_path / "server", tmp_path / "client"


class MeshClient:
    """An HTTP/1.1 keep-alive connection over mesh mTLS to an inbound listener."""

    def __init__(self, address: str, client: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(client / ca.ROOT_CERT))
        ctx.check_hostname = False  # mesh identities are SPIFFE URIs, not DNS names
        ctx.load_cert_chain(str(client / ca.CERT_CHAIN), str(client / ca.KEY))
        host, port = address.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=DEADLINE_S)
        self.sock = ctx.wrap_socket(raw)
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        self.serial = x509.load_der_x509_certificate(der).serial_number

    def get(self) -> int:
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed"
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        while len(body) < length:
            body += self.sock.recv(4096)
        return int(head.split(b" ")[1])

    def close(self) -> None:
        self.sock.close()


def _serial(certs: Path) -> int:
    return x509.load_pem_x509_certificate((certs / ca.CERT_CHAIN).read_bytes()).serial_number


def _served_serial_becomes(address: str, client: Path, serial: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        probe = MeshClient(address, client)
        seen = probe.serial
        probe.close()
        if seen == serial:
            return
        time.sleep(0.1)
    raise AssertionError(f"the listener never served certificate {serial:x}")


def _server(echo, sidecar, certs: Path, *extra: str) -> str:  # type: ignore[no-untyped-def]
    app = echo("reviews-app")
    inbound = f"127.0.0.1:{free_port()}"
    sidecar(SIDECAR, "--app", app.address, "--inbound", inbound, "--certs", str(certs), *extra)
    return inbound


def test_new_files_serve_the_next_handshake_and_open_connections_stay(
    echo, sidecar, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ca_dir, server, client = _mesh(tmp_path, datetime.timedelta(days=1))
    inbound = _server(echo, sidecar, server)
    before = MeshClient(inbound, client)
    assert before.serial == _serial(server)
    assert before.get() == 200

    ca.issue(ca_dir, server, namespace="default", service_account="reviews")  # rotated
    rotated = _serial(server)
    assert rotated != before.serial
    _served_serial_becomes(inbound, client, rotated)

    # The connection opened before the rotation is still up, on its own certificate.
    assert before.get() == 200
    assert before.get() == 200
    before.close()


def test_a_half_spent_certificate_is_renewed_by_the_ca(  # type: ignore[no-untyped-def]
    echo, sidecar, tmp_path: Path
) -> None:
    # Valid from 5 minutes ago (the CA backdates) for 4 more: past half its lifetime.
    ca_dir, server, client = _mesh(tmp_path, datetime.timedelta(minutes=4))
    first = _serial(server)
    inbound = _server(echo, sidecar, server, "--ca", str(ca_dir))
    deadline = time.monotonic() + DEADLINE_S
    while _serial(server) == first and time.monotonic() < deadline:
        time.sleep(0.1)
    renewed = _serial(server)
    assert renewed != first, "not renewed"
    lease = x509.load_pem_x509_certificate((server / ca.CERT_CHAIN).read_bytes())
    san = lease.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/default/sa/reviews"
    ]
    _served_serial_becomes(inbound, client, renewed)
    probe = MeshClient(inbound, client)
    assert probe.get() == 200
    probe.close()
