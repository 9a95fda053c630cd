"""POST /config swaps routing under load without failing a request."""

from __future__ import annotations

import collections
import threading
import time

import httpx

from ..samples import YAML_TYPE
from .conftest import service_entry
from .conftest import web_mesh as config


def test_reload_under_load_changes_split_with_zero_failures(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(config(addresses, (100, 0)))
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=car.url, headers={"host": "web.example.com"}) as c:
            deadline = time.monotonic() + 60
            for _ in range(20_000):  # bounded in count and time
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    r = c.get("/")
                    results.append((time.monotonic(), r.status_code, r.json().get("name", "")))
                except httpx.HTTPError as e:
                    results.append((time.monotonic(), 0, repr(e)))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        while len(results) < 500:
            time.sleep(0.01)
        r = httpx.post(
            f"{car.admin}/config",
            headers=YAML_TYPE,
            content=config(addresses, (0, 100)),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        swapped_at = time.monotonic()
        while len([t for t, _, _ in results if t > swapped_at + 0.2]) < 500:
            time.sleep(0.01)
    finally:
        stop.set()
        for w in workers:
            w.join()

    failures = [r for r in results if r[1] != 200]
    assert failures == []
    before = collections.Counter(n for t, _, n in results if t < swapped_at - 0.2)
    after = collections.Counter(n for t, _, n in results if t > swapped_at + 0.2)
    assert set(before) == {"v1"}
    assert set(after) == {"v2"}


def test_invalid_config_is_400_and_old_routing_stays(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(config(addresses, (100, 0)))
    bad = (
        config(addresses, (0, 100))
        .replace("weight: 100", "weight: -5")
        .replace(
            "hosts: [web.example.com]\n  http", "hosts: [web.example.com]\n  bogusField: 1\n  http"
        )
    )
    r = httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=bad, timeout=30)
    assert r.status_code == 400
    lines = r.text.strip().splitlines()
    assert len(lines) >= 2, r.text
    assert any("bogusField" in line for line in lines), r.text
    assert any("weight" in line for line in lines), r.text
    with httpx.Client(base_url=car.url, headers={"host": "web.example.com"}) as c:
        assert {c.get("/").json()["name"] for _ in range(20)} == {"v1"}


def test_an_equivalent_push_swaps_and_resets_nothing(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """Case 31: the same config pushed again (here with its documents reordered, which
    compiles to the same IR) is not swapped in: the version stays, nothing is reset."""
    addresses = [echo("v1").address, echo("v2").address]
    text = config(addresses, (100, 0))
    car = sidecar(text)
    reordered = "---\n".join(reversed(text.split("---\n")))
    for body in (text, reordered):
        r = httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"version": 1, "changed": False}
    r = httpx.post(
        f"{car.admin}/config", headers=YAML_TYPE, content=config(addresses, (0, 100)), timeout=30
    )
    assert r.json() == {"version": 2, "changed": True}
    assert car.stats()["reloads"] == {"applied": 1, "unchanged": 2, "refused": 0}


def outlier_config(good: str, bad: str, generation: int) -> str:
    return (
        service_entry("web.example.com", 80, [(good, {}), (bad, {})])
        + "---\n"
        + service_entry("other.example.com", 80, [(good, {})])
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web.example.com
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 300s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: other}}
spec:
  hosts: [other.example.com]
  http:
  - route:
    - destination: {{host: other.example.com}}
      headers: {{response: {{set: {{x-generation: "{generation}"}}}}}}
"""
    )


def test_endpoint_health_and_pools_survive_reloads_that_keep_the_cluster(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """What the core keeps across a swap, by (cluster, endpoint): an ejected endpoint stays
    ejected through reloads that change other routes (and its pooled connections are
    reused: no new upstream connection per reload)."""
    from .keepalive_upstream import KeepAliveUpstream

    good = KeepAliveUpstream(idle_ms=None, name="good")
    bad = echo("bad", status=503)
    try:
        car = sidecar(outlier_config(good.address, bad.address, 0), workers=1)
        with httpx.Client(base_url=car.url, headers={"host": "web.example.com"}) as c:
            for _ in range(10):  # round robin meets the failing endpoint: ejected
                c.get("/")

            def health() -> dict[str, str]:
                clusters = httpx.get(f"{car.admin}/clusters", timeout=10).json()["clusters"]
                (web,) = [x for x in clusters if x["name"].startswith("outbound|80||web.")]
                return {e["address"]: e["health"] for e in web["endpoints"]}

            assert health()[bad.address] == "EJECTED"
            assert c.get("/").text == "good"
            accepted = good.accepted
            for generation in range(1, 6):
                r = httpx.post(
                    f"{car.admin}/config",
                    headers=YAML_TYPE,
                    content=outlier_config(good.address, bad.address, generation),
                    timeout=30,
                )
                assert r.json() == {"version": generation + 1, "changed": True}
                assert health() == {bad.address: "EJECTED", good.address: "HEALTHY"}
                assert [c.get("/").text for _ in range(5)] == ["good"] * 5
            assert good.accepted == accepted  # one worker, sequential requests: one connection
    finally:
        good.stop()
