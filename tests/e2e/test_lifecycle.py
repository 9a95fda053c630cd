"""Inbound to the local app, Kubernetes Service + EndpointSlice, graceful drain."""

from __future__ import annotations

import threading
import time

import httpx

from .conftest import free_port, service_entry

K8S = """apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: shop}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-abc
  namespace: shop
  labels: {{kubernetes.io/service-name: ratings, version: v1}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def test_kubernetes_service_and_endpointslice(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("ratings-v1")
    port = int(up.address.rsplit(":", 1)[1])
    car = sidecar(K8S.format(port=port), "--namespace", "shop")
    with httpx.Client(base_url=car.url) as c:
        for host in ("ratings", "ratings:9080", "ratings.shop", "ratings.shop.svc.cluster.local"):
            r = c.get("/", headers={"host": host})
            assert r.status_code == 200, host
            assert r.json()["name"] == "ratings-v1"


def test_inbound_listener_forwards_to_the_app(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    app = echo("local-app")
    other = echo("other")
    inbound = f"127.0.0.1:{free_port()}"
    car = sidecar(
        service_entry("x.example.com", 80, [(other.address, {})]),
        "--app",
        app.address,
        "--inbound",
        inbound,
    )
    r = httpx.get(f"http://{inbound}/anything", headers={"host": "whatever"})
    assert r.status_code == 200
    assert r.json()["name"] == "local-app"
    assert httpx.get(car.url, headers={"host": "x.example.com"}).json()["name"] == "other"


def test_sigterm_lets_in_flight_requests_finish(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("slow")
    car = sidecar(
        service_entry("slow.example.com", 80, [(up.address, {})]), "--drain-timeout", "20"
    )
    outcome: list[object] = []

    def slow_request() -> None:
        try:
            r = httpx.get(
                car.url, headers={"host": "slow.example.com", "x-echo-delay-ms": "1500"}, timeout=30
            )
            outcome.append(r.status_code)
        except httpx.HTTPError as e:
            outcome.append(e)

    t = threading.Thread(target=slow_request)
    t.start()
    # Wait until the request is in flight at the proxy (counted by the listener).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if car.stats()["listeners"]["outbound"]["rq_active"] == 1:  # type: ignore[index]
            break
        time.sleep(0.02)
    assert car.stop() == 0
    t.join()
    assert outcome == [200]
