"""The mTLS inbound listener as a TLS auditor sees it: testssl.sh (Debian's `testssl`)
finds TLS 1.2 and 1.3 only, no weak cipher, secure renegotiation signalled; and a client
that asks to renegotiate (pyOpenSSL, with the mesh certificate the listener requires) is
refused."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from OpenSSL import SSL

from meshfast.security import ca

from .conftest import free_port

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh") or "testssl"
SIDECAR = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec: {}\n"


@pytest.fixture
def inbound(echo, sidecar, tmp_path: Path) -> tuple[str, Path]:  # type: ignore[no-untyped-def]
    """An mTLS inbound listener (the reviews identity) in front of an echo app."""
    ca.init_ca(tmp_path / "ca")
    ca.issue(tmp_path / "ca", tmp_path / "reviews", namespace="default", service_account="r")
    app = echo("reviews-app")
    address = f"127.0.0.1:{free_port()}"
    sidecar(
        SIDECAR,
        "--app",
        app.address,
        "--inbound",
        address,
        "--certs",
        str(tmp_path / "reviews"),
    )
    return address, tmp_path / "reviews"


def test_testssl_finds_only_modern_tls_and_strong_ciphers(inbound, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    address, _ = inbound
    report = tmp_path / "testssl.json"
    subprocess.run(
        [TESTSSL, "--quiet", "--color", "0", "-p", "-s", "-R", "--jsonfile", str(report), address],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,  # its exit status counts findings; the JSON is what is checked
    )
    found = {x["id"]: x["finding"] for x in json.loads(report.read_text())}
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert found[old] == "not offered", (old, found[old])
    assert found["TLS1_2"] == "offered"
    assert found["TLS1_3"].startswith("offered")
    weak = ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE")
    for category in weak:
        assert found[f"cipherlist_{category}"] == "not offered", category
    assert found["cipherlist_STRONG"] == "offered"
    assert found["secure_renego"] == "supported"  # RFC 5746 signalled (rustls)


def _read_response(conn: SSL.Connection) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(4096)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        body += conn.recv(4096)
    return head


def test_a_client_cannot_renegotiate(inbound) -> None:  # type: ignore[no-untyped-def]
    """testssl cannot try client-initiated renegotiation against a listener that wants a
    client certificate: this client has the mesh's, speaks TLS 1.2 and asks."""
    address, certs = inbound
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(str(certs / ca.CERT_CHAIN))
    ctx.use_privatekey_file(str(certs / ca.KEY))
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        # pyOpenSSL needs a blocking socket (one with a timeout is non-blocking inside);
        # the kernel's receive timeout bounds every wait instead.
        raw.setblocking(True)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 30, 0))
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        conn.do_handshake()
        assert conn.get_protocol_version_name() == "TLSv1.2"
        conn.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
        assert _read_response(conn).startswith(b"HTTP/1.1 200")
        assert conn.renegotiate()
        with pytest.raises(SSL.Error, match="no renegotiation"):
            conn.do_handshake()
