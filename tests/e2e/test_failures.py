"""Local replies carry Envoy response flags, and the process keeps serving."""

from __future__ import annotations

import httpx

from .conftest import free_port, service_entry


def test_no_route_is_404_nr(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]))
    with httpx.Client(base_url=car.url) as c:
        r = c.get("/", headers={"host": "unknown.example.com"})
        assert r.status_code == 404
        assert r.headers["x-meshfast-flags"] == "NR"
        assert c.get("/", headers={"host": "a.example.com"}).status_code == 200


def test_refused_endpoints_give_503_uf_then_serving_continues(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("alive")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    config = (
        service_entry("dead.example.com", 80, [(a, {}) for a in dead])
        + "---\n"
        + service_entry("alive.example.com", 80, [(up.address, {})])
    )
    car = sidecar(config)
    with httpx.Client(base_url=car.url) as c:
        for _ in range(10):
            r = c.get("/", headers={"host": "dead.example.com"})
            assert r.status_code == 503
            assert r.headers["x-meshfast-flags"] in {"UF", "UH"}
        assert c.get("/", headers={"host": "alive.example.com"}).json()["name"] == "alive"
    stats = car.stats()
    cluster = stats["clusters"]["outbound|80||dead.example.com"]  # type: ignore[index]
    assert cluster["response_flags"]["UF"] == 10


def test_missing_subset_cluster_is_503_and_no_endpoints_is_uh(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    config = (
        service_entry("a.example.com", 80, [(up.address, {"version": "v1"})])
        + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a.example.com
  subsets:
  - {name: v9, labels: {version: v9}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com]
  http:
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: a.example.com, subset: nope}}]
  - route: [{destination: {host: a.example.com, subset: v9}}]
"""
    )
    car = sidecar(config)
    with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}) as c:
        r = c.get("/nosubset")
        assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "NC")
        r = c.get("/")
        assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "UH")


def test_route_timeout_is_504_ut(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("slow")
    config = (
        service_entry("a.example.com", 80, [(up.address, {})])
        + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com]
  http:
  - timeout: 200ms
    route: [{destination: {host: a.example.com}}]
"""
    )
    car = sidecar(config)
    with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}, timeout=30) as c:
        r = c.get("/", headers={"x-echo-delay-ms": "5000"})
        assert (r.status_code, r.headers["x-meshfast-flags"]) == (504, "UT")
        assert c.get("/").status_code == 200


PASSTHROUGH_SERVICE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  resolution: NONE
  ports: [{number: 80, name: http, protocol: HTTP}]
"""


def test_resolution_none_goes_to_the_original_destination(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """No iptables capture here, so Envoy's x-envoy-original-dst-host names it, where the
    user allowed it (`--original-dst-header`, Envoy's use_http_header)."""
    up = echo("original")
    car = sidecar(PASSTHROUGH_SERVICE, "--original-dst-header")
    with httpx.Client(base_url=car.url, headers={"host": "ext.example.com"}) as c:
        r = c.get("/", headers={"x-envoy-original-dst-host": up.address})
        assert r.json()["name"] == "original"
        assert "x-envoy-original-dst-host" not in r.json()["headers"]
        r = c.get("/")
        assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "UH")


def test_the_original_destination_header_is_ignored_unless_allowed(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("original")
    car = sidecar(PASSTHROUGH_SERVICE)
    with httpx.Client(base_url=car.url, headers={"host": "ext.example.com"}) as c:
        r = c.get("/", headers={"x-envoy-original-dst-host": up.address})
        assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "UH")


def test_no_original_destination_leads_into_the_sidecar_itself(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """Not its admin API (where the config is read and replaced), not its own listeners."""
    car = sidecar(PASSTHROUGH_SERVICE, "--original-dst-header")
    admin = car.admin.removeprefix("http://")
    with httpx.Client(base_url=car.url, headers={"host": "ext.example.com"}) as c:
        for own in (admin, car.outbound, admin.replace("127.0.0.1", "0.0.0.0")):
            r = c.get("/config_dump", headers={"x-envoy-original-dst-host": own})
            assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "UH"), own
