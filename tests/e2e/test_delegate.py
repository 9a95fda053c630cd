"""Delegate VirtualServices end to end: the root's rule pulls in the delegate's rules."""

from __future__ import annotations

import httpx

from .conftest import service_entry


def test_root_rule_delegates_its_prefix(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    v1, v2, other = echo("v1"), echo("v2"), echo("other")
    config = (
        service_entry(
            "shop.example.com",
            80,
            [(v1.address, {"version": "v1"}), (v2.address, {"version": "v2"})],
        )
        + "---\n"
        + service_entry("other.example.com", 80, [(other.address, {})])
        + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop.example.com
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [shop.example.com]
  http:
  - match: [{uri: {prefix: /cart}}]
    delegate: {name: cart}
  - route: [{destination: {host: other.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart}
spec:
  http:
  - match: [{uri: {prefix: /cart/v2}}]
    route: [{destination: {host: shop.example.com, subset: v2}}]
  - route: [{destination: {host: shop.example.com, subset: v1}}]
"""
    )
    car = sidecar(config)
    with httpx.Client(base_url=car.url, headers={"host": "shop.example.com"}) as c:
        assert c.get("/cart/v2/items").json()["name"] == "v2"
        assert c.get("/cart/items").json()["name"] == "v1"
        # Outside the delegated prefix the root's own rules apply.
        assert c.get("/home").json()["name"] == "other"
