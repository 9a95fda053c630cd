"""Locality-aware balancing end to end: distribute weights, and failover to the
next locality once outlier detection ejects the local endpoints."""

from __future__ import annotations

import collections

import httpx


def mesh(endpoints: list[tuple[str, str, str]], policy: str) -> str:
    """endpoints: (address, name, locality)."""
    lines = [
        "apiVersion: networking.istio.io/v1",
        "kind: ServiceEntry",
        "metadata: {name: web}",
        "spec:",
        "  hosts: [web.example.com]",
        "  location: MESH_INTERNAL",
        "  resolution: STATIC",
        "  ports: [{number: 80, name: http, protocol: HTTP}]",
        "  endpoints:",
    ]
    for address, _name, locality in endpoints:
        ip, port = address.rsplit(":", 1)
        lines.append(f"  - {{address: {ip}, ports: {{http: {port}}}, locality: {locality}}}")
    return (
        "\n".join(lines)
        + f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web.example.com
  trafficPolicy:
{policy}"""
    )


def names(car, n: int) -> collections.Counter[str]:  # type: ignore[no-untyped-def]
    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=car.url, headers={"host": "web.example.com"}) as c:
        for _ in range(n):
            r = c.get("/")
            seen[r.json()["name"] if r.status_code == 200 else str(r.status_code)] += 1
    return seen


def test_distribute_splits_by_locality(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    eps = [
        (echo("z1-a").address, "z1-a", "us-west/zone1/a"),
        (echo("z1-b").address, "z1-b", "us-west/zone1/b"),
        (echo("z2").address, "z2", "us-west/zone2/a"),
    ]
    policy = """    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
"""
    car = sidecar(mesh(eps, policy), "--locality", "us-west/zone1/a")
    seen = names(car, 1000)
    zone1 = seen["z1-a"] + seen["z1-b"]
    assert abs(zone1 / 1000 - 0.8) <= 0.03, seen
    assert abs(seen["z2"] / 1000 - 0.2) <= 0.03, seen


def test_failover_to_the_next_locality_after_ejection(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    local = echo("local", status=503)
    remote = echo("remote")
    eps = [
        (local.address, "local", "us-east/zone1/a"),
        (remote.address, "remote", "us-west/zone1/a"),
    ]
    policy = """    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 5m
      maxEjectionPercent: 100
"""
    car = sidecar(mesh(eps, policy), "--locality", "us-east/zone1/a")
    # Everything prefers the local endpoint until it fails once and is ejected...
    first = names(car, 1)
    assert first == {"503": 1}
    # ...then traffic fails over to the other region.
    assert names(car, 50) == {"remote": 50}
    clusters = httpx.get(f"{car.admin}/clusters").json()["clusters"]
    (cluster,) = [c for c in clusters if c["name"] == "outbound|80||web.example.com"]
    health = {e["address"]: e["health"] for e in cluster["endpoints"]}
    assert health[local.address] == "EJECTED"
    assert car.stats()["clusters"]["outbound|80||web.example.com"]["ejections_total"] == 1
