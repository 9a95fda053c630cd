"""Routing and balancing through a real sidecar with real clients."""

from __future__ import annotations

import collections
import json
import subprocess

import httpx

from .conftest import service_entry

HOST = "reviews.default.svc.cluster.local"


def mesh(echo, lb: str = "ROUND_ROBIN", vs: str = "") -> str:  # type: ignore[no-untyped-def]
    servers = [echo(f"v{i}") for i in (1, 2, 3)]
    eps = [(s.address, {"version": f"v{i}"}) for i, s in enumerate(servers, 1)]
    dr = f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
"""
    return service_entry(HOST, 9080, eps) + dr + vs


SPLIT_VS = """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v3}
  - match:
    - uri: {prefix: /v2only}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"""


def names(client: httpx.Client, url: str, n: int, **kw: object) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        r = client.get(url, **kw)  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        seen[r.json()["name"]] += 1
    return seen


def test_round_robin_lands_exactly_evenly(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(echo))
    with httpx.Client(base_url=car.url, headers={"host": "reviews:9080"}) as c:
        assert names(c, "/", 300) == {"v1": 100, "v2": 100, "v3": 100}


def test_weighted_split_80_20_and_header_match(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(echo, vs=SPLIT_VS))
    with httpx.Client(base_url=car.url, headers={"host": "reviews"}) as c:
        split = names(c, "/", 5000)
        assert set(split) == {"v1", "v2"}
        assert abs(split["v1"] / 5000 - 0.80) <= 0.03, split
        assert names(c, "/", 20, headers={"end-user": "jason"}) == {"v3": 20}
        assert names(c, "/v2only/x", 20) == {"v2": 20}


def test_curl_http1_and_h2_prior_knowledge(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(echo, vs=SPLIT_VS))
    for flags, proto in (([], "HTTP/1.1"), (["--http2-prior-knowledge"], "HTTP/2")):
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "-i",
                *flags,
                "-H",
                "end-user: jason",
                "-H",
                "host: reviews.default.svc.cluster.local:9080",
                f"{car.url}/hello?x=1",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        head, _, body = out.partition("\n\n")
        assert body, out
        assert head.startswith(proto), head
        assert "x-request-id:" in head.lower()
        reply = json.loads(body)
        assert reply["name"] == "v3"
        assert reply["path"] == "/hello?x=1"
        assert reply["headers"]["end-user"] == "jason"


def test_short_names_reach_the_service(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(echo))
    with httpx.Client(base_url=car.url) as c:
        for host in (
            "reviews",
            "reviews:9080",
            "reviews.default",
            "reviews.default.svc",
            HOST,
            f"{HOST}:9080",
            "REVIEWS.default",
        ):
            r = c.get("/", headers={"host": host})
            assert r.status_code == 200, (host, r.status_code)


def test_request_id_is_generated_or_kept(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(echo))
    with httpx.Client(base_url=car.url, headers={"host": "reviews"}) as c:
        fresh = c.get("/").json()["headers"]["x-request-id"]
        assert len(fresh) == 36
        kept = c.get("/", headers={"x-request-id": "abc-123"}).json()["headers"]["x-request-id"]
        assert kept == "abc-123"


def test_least_request_and_random_reach_every_endpoint(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    for lb in ("LEAST_REQUEST", "RANDOM"):
        car = sidecar(mesh(echo, lb=lb))
        with httpx.Client(base_url=car.url, headers={"host": "reviews"}) as c:
            seen = names(c, "/", 300)
        assert set(seen) == {"v1", "v2", "v3"}, (lb, seen)
        car.stop()


def test_upstream_connections_are_pooled_and_reused(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("pooled")
    car = sidecar(service_entry("p.example.com", 80, [(up.address, {})]))
    with httpx.Client(base_url=car.url, headers={"host": "p.example.com"}) as c:
        for _ in range(50):
            assert c.get("/").status_code == 200
    cluster = car.stats()["clusters"]["outbound|80||p.example.com"]
    # One downstream connection lives on one worker, whose pool reuses one upstream connection.
    assert cluster["rq_2xx"] == 50
    assert cluster["cx_total"] == 1
