"""Inbound to the local app, Kubernetes Service + EndpointSlice, graceful drain."""

from __future__ import annotations

import subprocess
import sys
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


EXIT_SCRIPT = """
import socket, sys
from meshfast import _core
from meshfast.config import ir
echo = _core.EchoServer("127.0.0.1:0", name="e")
core = _core.Core(workers=2)
route = ir.Route(name="r", match_=ir.RouteMatch(), action=ir.RouteAction(
    clusters=(ir.WeightedCluster(cluster="c", weight=1),)))
core.apply_snapshot(ir.encode(ir.Snapshot(
    version=1,
    listeners=(ir.Listener(name="l", address="127.0.0.1:0", route_table="t"),),
    route_tables=(ir.RouteTable(name="t", virtual_hosts=(
        ir.VirtualHost(name="v", domains=("*",), routes=(route,)),)),),
    clusters=(ir.Cluster(name="c", endpoints=(ir.Endpoint(address=echo.address),)),),
)))
host, port = core.listeners()[0][1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n")
assert s.recv(12) == b"HTTP/1.1 200"
s.close()
core.shutdown(1.0)
"""


def test_the_interpreter_exits_cleanly_right_after_shutdown() -> None:
    """Workers hold a Python thread state for life; shutdown joins them, so none is
    left needing the GIL while the interpreter finalises (that used to abort)."""
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
