"""Path normalization through `meshfast run`: a VirtualService that answers 403 on
`/admin` is not bypassed with dot segments or escapes (Istio's default BASE), and
`--path-normalization` picks Istio's other modes."""

from __future__ import annotations

import socket

import pytest

from .conftest import service_entry

GUARD = """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com]
  http:
  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403}
  - route: [{destination: {host: a.example.com}}]
"""


def raw_get(url: str, target: str) -> tuple[int, str]:
    """The status and body of `GET target` sent byte for byte (client libraries
    normalize paths themselves)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


@pytest.mark.parametrize(
    "target", ["/public/../admin", "/public/%2e%2e/admin", "/./admin", "/%61dmin"]
)
def test_dot_segments_and_escapes_do_not_bypass_a_route(echo, sidecar, target: str) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]) + GUARD)
    assert raw_get(car.url, target)[0] == 403


def test_the_upstream_gets_the_normalized_path(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]) + GUARD)
    status, body = raw_get(car.url, "/public/./x/../%7Euser?q=/../")
    assert status == 200
    assert '"/public/~user?q=/../"' in body, body


def test_merge_slashes_is_a_flag(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    config = service_entry("a.example.com", 80, [(up.address, {})]) + GUARD
    assert raw_get(sidecar(config).url, "//admin")[0] == 200
    merged = sidecar(config, "--path-normalization", "MERGE_SLASHES")
    assert raw_get(merged.url, "//admin")[0] == 403
