"""DNS ServiceEntry endpoints: which names a config needs and their substitution (pure)."""

from __future__ import annotations

from meshfast.config import CompileOptions, compile_config, dns, ir, load_config_text

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - address: Backend.Example.Com
    weight: 3
    labels: {version: v1}
    locality: eu/a
  - address: 10.0.0.9
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr}
spec:
  hosts: [rr.example.com]
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 8080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static}
spec:
  hosts: [static.example.com]
  resolution: STATIC
  ports: [{number: 81, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.example.com
  subsets: [{name: v1, labels: {version: v1}}]
"""

ADDRESSES = {
    "backend.example.com": ("10.1.0.2", "10.1.0.1", "2001:db8::1"),
    "rr.example.com": ("10.2.0.7", "10.2.0.8"),
}


def compiled() -> tuple[ir.Snapshot, dict[str, dns.Mode]]:
    config = load_config_text(CONFIG)
    return compile_config(config, CompileOptions(version=4)), dns.plan(config)


def endpoints(snapshot: ir.Snapshot, cluster: str) -> list[ir.Endpoint]:
    [found] = [c for c in snapshot.clusters if c.name == cluster]
    return list(found.endpoints)


def test_plan_and_hostnames() -> None:
    snapshot, plan = compiled()
    assert plan == {"api.example.com": "DNS", "rr.example.com": "DNS_ROUND_ROBIN"}
    # endpoint hostnames, and the host of a DNS ServiceEntry without endpoints
    assert dns.hostnames(snapshot, plan) == {"backend.example.com", "rr.example.com"}
    assert dns.hostname("[::1]:80") is None
    assert dns.hostname("10.0.0.1:80") is None
    assert dns.hostname("Web.Example:80") == "web.example"


def test_dns_endpoints_become_one_endpoint_per_address() -> None:
    snapshot, plan = compiled()
    out = dns.substitute(snapshot, plan, ADDRESSES)
    assert out.version == 4
    want = [
        ir.Endpoint("10.0.0.9:80"),
        ir.Endpoint("10.1.0.1:80", 3, {"version": "v1"}, "eu/a"),
        ir.Endpoint("10.1.0.2:80", 3, {"version": "v1"}, "eu/a"),
        ir.Endpoint("[2001:db8::1]:80", 3, {"version": "v1"}, "eu/a"),
    ]
    assert endpoints(out, "outbound|80||api.example.com") == want
    # subsets too: only the labelled (DNS) endpoint
    assert endpoints(out, "outbound|80|v1|api.example.com") == want[1:]
    # DNS_ROUND_ROBIN: the first address only
    assert endpoints(out, "outbound|8080||rr.example.com") == [ir.Endpoint("10.2.0.7:8080")]
    # other clusters are the same objects
    static = "outbound|81||static.example.com"
    assert endpoints(out, static) == endpoints(snapshot, static)


def test_unresolved_names_keep_their_hostname_endpoint() -> None:
    snapshot, plan = compiled()
    out = dns.substitute(snapshot, plan, {"rr.example.com": ("10.2.0.7",)})
    assert [e.address for e in endpoints(out, "outbound|80||api.example.com")] == [
        "10.0.0.9:80",
        "Backend.Example.Com:80",  # as written
    ]
    assert dns.substitute(snapshot, plan, {}) == snapshot
    assert dns.substitute(snapshot, {}, ADDRESSES) is snapshot


def test_change_detection_is_by_address_set() -> None:
    assert dns.merge_addresses(None, ["a", "b", "a"]) == ("a", "b")
    # same set in another order: the old order is kept (no push, round robin keeps its pick)
    assert dns.merge_addresses(("a", "b"), ["b", "a"]) == ("a", "b")
    assert dns.merge_addresses(("a", "b"), ["b", "c"]) == ("b", "c")
