"""HTTP/1.1 framing defenses (RELIABILITY.md §3), with bytes written by hand."""

from __future__ import annotations

import json
import socket

from .conftest import service_entry


def exchange(address: str, data: bytes) -> bytes:
    """Sends `data`, returns everything until the proxy closes (or 5 s pass)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_cl_and_te_is_framed_by_te_never_forwarded_with_both_and_closed(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("up")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]))
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        # What a smuggler hopes the proxy reads as a second request:
        b"GET /smuggled HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
    )
    out = exchange(car.outbound, smuggle)
    assert out.startswith(b"HTTP/1.1 200"), out[:80]
    # RFC 9112 6.1: framed by Transfer-Encoding, Content-Length dropped, connection closed.
    assert out.count(b"HTTP/1.1 ") == 1, out
    body = json.loads(out.split(b"\r\n\r\n", 1)[1].split(b"\r\n0\r\n")[0].split(b"\r\n", 1)[-1])
    assert "content-length" not in body["headers"]
    assert body["path"] == "/"


def test_oversized_and_too_many_headers_are_431(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("up")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]))
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(101))
    out = exchange(car.outbound, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n" + many + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431"), out[:60]
    big = b"x-big: " + b"a" * 70_000 + b"\r\n"
    out = exchange(car.outbound, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n" + big + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431"), out[:60]
    two_cl = (
        b"POST / HTTP/1.1\r\nHost: a.example.com\r\n"
        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
    )
    assert exchange(car.outbound, two_cl).startswith(b"HTTP/1.1 400")
    # The process keeps serving.
    ok = exchange(
        car.outbound, b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"
    )
    assert ok.startswith(b"HTTP/1.1 200")
