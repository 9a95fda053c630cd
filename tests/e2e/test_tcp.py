"""Ports declared TCP are proxied byte for byte."""

from __future__ import annotations

import socket
import time

from .conftest import free_port, service_entry


def test_tcp_port_is_proxied_per_connection(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("tcp-upstream")
    port = free_port()
    car = sidecar(service_entry("db.example.com", port, [(up.address, {})], protocol="TCP"))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /raw HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        assert b'"tcp-upstream"' in data
    # Byte counts land when each side has closed; poll rather than race the close.
    deadline = time.monotonic() + 20
    while True:
        listener = car.stats()["listeners"][f"outbound|tcp|{port}"]  # type: ignore[index]
        if listener["cx_active"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert listener["cx_total"] == 3
    assert listener["cx_active"] == 0
    assert listener["bytes_in"] > 0
    assert listener["bytes_out"] > 0


def test_tls_port_passes_non_tls_bytes_to_its_only_service(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """Istio treats a TLS port without a matching VS rule as opaque TCP."""
    up = echo("behind-tls-port")
    port = free_port()
    car = sidecar(service_entry("secure.example.com", port, [(up.address, {})], protocol="TLS"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b'"behind-tls-port"' in data
    assert f"outbound|tls|{port}" in car.stats()["listeners"]
