"""DestinationRule consistentHash end to end: stickiness, minimal disruption
when an endpoint leaves, generated cookies, source IP and query keys."""

from __future__ import annotations

import httpx
import pytest

from ..samples import YAML_TYPE
from .conftest import service_entry


def mesh(addresses: list[str], lb: str) -> str:
    return (
        service_entry("hash.example.com", 80, [(a, {}) for a in addresses])
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: hash}}
spec:
  host: hash.example.com
  trafficPolicy:
    loadBalancer:
{lb}"""
    )


def owners(car, keys: range, **headers: str) -> dict[int, str]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=car.url, headers={"host": "hash.example.com", **headers}) as c:
        return {k: c.get("/", headers={"x-user": f"user-{k}"}).json()["name"] for k in keys}


@pytest.mark.parametrize(
    "table", ["{}", "{ringHash: {minimumRingSize: 2048}}", "{maglev: {tableSize: 65537}}"]
)
def test_header_hash_is_sticky_and_removal_moves_about_one_nth(echo, sidecar, table: str) -> None:  # type: ignore[no-untyped-def]
    ups = [echo(f"e{i}") for i in range(5)]
    addresses = [u.address for u in ups]
    extra = "" if table == "{}" else ", " + table[1:-1]
    lb = f"      consistentHash: {{httpHeaderName: x-user{extra}}}\n"
    car = sidecar(mesh(addresses, lb))
    keys = range(1000)
    first = owners(car, keys)
    assert owners(car, keys) == first, "every key stays on its endpoint"
    assert len(set(first.values())) == 5
    # Remove endpoint e2 by config reload: only its keys may move.
    rest = [a for a, u in zip(addresses, ups, strict=True) if a != ups[2].address]
    r = httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=mesh(rest, lb), timeout=30)
    assert r.status_code == 200, r.text
    after = owners(car, keys)
    # e2 held about a fifth of the keys (the spread depends on the random
    # ports, so the bound is wide); every one of them moved to the others.
    removed = [k for k in keys if first[k] == "e2"]
    assert 0.10 <= len(removed) / len(keys) <= 0.30, len(removed)
    assert all(after[k] != "e2" for k in removed)
    # The ring moves only e2's keys; Maglev's table refill may shuffle a few
    # others (at most 2.4% over 300 random port sets in a probe; 5% allowed).
    others = [k for k in keys if first[k] != "e2"]
    others_moved = sum(1 for k in others if after[k] != first[k])
    limit = 0 if "maglev" not in table else len(others) // 20
    assert others_moved <= limit, others_moved


def test_generated_cookie_pins_the_client(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    ups = [echo(f"e{i}") for i in range(4)]
    lb = "      consistentHash: {httpCookie: {name: session, ttl: 60s, path: /}}\n"
    car = sidecar(mesh([u.address for u in ups], lb))
    for _ in range(5):
        with httpx.Client(base_url=car.url, headers={"host": "hash.example.com"}) as c:
            r = c.get("/")
            set_cookie = r.headers["set-cookie"]
            assert set_cookie.startswith("session=")
            assert "Max-Age=60" in set_cookie
            assert "Path=/" in set_cookie
            owner = r.json()["name"]
            # httpx keeps the cookie: every later request lands on the same endpoint.
            for _ in range(10):
                again = c.get("/")
                assert again.json()["name"] == owner
                assert "set-cookie" not in again.headers


def test_query_parameter_hash(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    ups = [echo(f"e{i}") for i in range(4)]
    lb = "      consistentHash: {httpQueryParameterName: user}\n"
    car = sidecar(mesh([u.address for u in ups], lb))
    with httpx.Client(base_url=car.url, headers={"host": "hash.example.com"}) as c:
        for k in range(50):
            names = {c.get(f"/?user=u{k}").json()["name"] for _ in range(5)}
            assert len(names) == 1


def test_source_ip_hash(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    ups = [echo(f"e{i}") for i in range(4)]
    lb = "      consistentHash: {useSourceIp: true}\n"
    car = sidecar(mesh([u.address for u in ups], lb))
    seen = set()
    for _ in range(20):
        # A new connection each time: the source port changes, the IP does not.
        seen.add(httpx.get(car.url, headers={"host": "hash.example.com"}).json()["name"])
    assert len(seen) == 1
