"""Long-lived streams (HTTP/2, gRPC, WebSocket) stay open across config reloads and keep
exchanging messages: reloads that change other routes, and reloads that change their own
route (a stream finishes on the config it started with; new streams take the new one).

RELIABILITY.md §3 case 31: "long-lived websocket/gRPC streams survive reloads that don't
touch their listener/filter chain".
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ..samples import YAML_TYPE
from .conftest import service_entry
from .streams import KINDS, Stream, Upstream

RELOADS = 10
AUTHORITY = "stream.example.com:8080"


def mesh(kind: str, upstreams: list[str], own: str, generation: int) -> str:
    """The stream's host routed to subset ``own`` ("v1"/"v2"), and another host whose
    route answers ``x-generation: generation`` (what the reloads of other routes change)."""
    protocol = KINDS[kind][2]
    eps = [(a, {"version": f"v{i}"}) for i, a in enumerate(upstreams, 1)]
    return (
        service_entry("stream.example.com", 8080, eps, protocol=protocol)
        + "---\n"
        + service_entry("other.example.com", 80, [(upstreams[0], {})])
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: stream}}
spec:
  host: stream.example.com
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: stream}}
spec:
  hosts: [stream.example.com]
  http:
  - route:
    - destination: {{host: stream.example.com, subset: {own}}}
      headers: {{response: {{set: {{x-own-generation: "{generation}"}}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: other}}
spec:
  hosts: [other.example.com]
  http:
  - directResponse: {{status: 200, body: {{string: "generation {generation}"}}}}
"""
    )


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def upstreams(kind: str) -> Iterator[list[Upstream]]:
    started = [KINDS[kind][0]("v1"), KINDS[kind][0]("v2")]
    yield started
    for up in started:
        up.stop()


def push(car, config: str) -> int:  # type: ignore[no-untyped-def]
    r = httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=config, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True, r.text
    return int(r.json()["version"])


def open_stream(kind: str, car) -> Stream:  # type: ignore[no-untyped-def]
    return KINDS[kind][1](car.outbound, AUTHORITY)


def test_a_stream_survives_reloads_of_other_routes(kind: str, upstreams, sidecar) -> None:  # type: ignore[no-untyped-def]
    """Case 31: 10 reloads that change another host's route; the stream keeps talking to
    its upstream, and each reload is served (the other route answers its generation)."""
    addresses = [u.address for u in upstreams]
    car = sidecar(mesh(kind, addresses, "v1", 0))
    stream = open_stream(kind, car)
    try:
        assert stream.exchange("hello") == "v1:hello"
        for generation in range(1, RELOADS + 1):
            version = push(car, mesh(kind, addresses, "v1", generation))
            r = httpx.get(car.url, headers={"host": "other.example.com"}, timeout=10)
            assert r.text == f"generation {generation}", (version, r.text)
            assert stream.exchange(f"m{generation}") == f"v1:m{generation}"
    finally:
        stream.close()


def test_a_stream_finishes_on_the_config_it_started_with(kind: str, upstreams, sidecar) -> None:  # type: ignore[no-untyped-def]
    """Case 31, and more: 10 reloads that change the stream's own route (its subset flips
    v1 → v2 → v1 …, its response header changes); the open stream stays with the upstream
    it started on, while a stream opened after a reload goes where the new config says."""
    addresses = [u.address for u in upstreams]
    car = sidecar(mesh(kind, addresses, "v1", 0))
    stream = open_stream(kind, car)
    try:
        assert stream.exchange("hello") == "v1:hello"
        for generation in range(1, RELOADS + 1):
            own = "v2" if generation % 2 else "v1"
            push(car, mesh(kind, addresses, own, generation))
            assert stream.exchange(f"m{generation}") == f"v1:m{generation}"
            if generation in (1, RELOADS - 1):  # a new stream sees the new route (v2)
                fresh = open_stream(kind, car)
                try:
                    assert fresh.exchange("new") == "v2:new"
                finally:
                    fresh.close()
    finally:
        stream.close()
