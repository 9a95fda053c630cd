"""DestinationRule traffic policies: consistent hashing, the subset/port merge, locality weights."""

from __future__ import annotations

import textwrap
from fractions import Fraction

import msgspec
import pytest

from meshfast.config import CompileOptions, ConfigError, compile_config, ir, load_config_text
from meshfast.config import resources as r
from meshfast.config.policy import load_balancer_for, locality_matches, patterns_overlap
from meshfast.config.validate_policy import is_prime

FQDN = "web.default.svc.cluster.local"

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80}, {name: http-alt, port: 81}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v1
  labels: {kubernetes.io/service-name: web, version: v1}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: http-alt, port: 8081}]
endpoints:
- addresses: [10.0.0.1]
---
"""


def dr(spec: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\n"
        "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")
    )


def clusters(text: str, **options: object) -> dict[str, ir.Cluster]:
    config = load_config_text(textwrap.dedent(text), source="t.yaml")
    snap = compile_config(config, CompileOptions(**options))  # type: ignore[arg-type]
    return {c.name: c for c in snap.clusters}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), source="t.yaml")
    return [str(p) for p in info.value.problems]


# --- consistent hashing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hash_yaml", "expected"),
    [
        ("{httpHeaderName: X-User}", ir.HashPolicy(source="header", name="x-user")),
        (
            "{httpCookie: {name: Sticky, path: /app, ttl: 30s}}",
            ir.HashPolicy(source="cookie", name="Sticky", cookie_path="/app", cookie_ttl_ms=30_000),
        ),
        (
            "{httpCookie: {name: s, ttl: 0s}}",
            ir.HashPolicy(source="cookie", name="s", cookie_ttl_ms=0),
        ),
        ("{httpCookie: {name: s}}", ir.HashPolicy(source="cookie", name="s")),
        ("{useSourceIp: true}", ir.HashPolicy(source="source_ip")),
        ("{httpQueryParameterName: User}", ir.HashPolicy(source="query", name="User")),
        (
            "{useSourceIp: true, ringHash: {minimumRingSize: 4096}}",
            ir.HashPolicy(source="source_ip", algorithm="ring", table_size=4096),
        ),
        (
            "{useSourceIp: true, ringHash: {}}",
            ir.HashPolicy(source="source_ip", algorithm="ring", table_size=1024),
        ),
        (
            "{useSourceIp: true, maglev: {tableSize: 251}}",
            ir.HashPolicy(source="source_ip", algorithm="maglev", table_size=251),
        ),
        (
            "{useSourceIp: true, maglev: {}}",
            ir.HashPolicy(source="source_ip", algorithm="maglev", table_size=65537),
        ),
        (
            "{httpHeaderName: x, minimumRingSize: 42}",
            ir.HashPolicy(source="header", name="x", algorithm="ring", table_size=42),
        ),
    ],
)
def test_consistent_hash_forms_at_dr_level(hash_yaml: str, expected: ir.HashPolicy) -> None:
    c = clusters(
        SERVICE
        + dr(f"host: web\ntrafficPolicy:\n  loadBalancer: {{consistentHash: {hash_yaml}}}\n")
    )
    for port in (80, 81):
        cluster = c[f"outbound|{port}||{FQDN}"]
        assert cluster.hash == expected
        assert cluster.lb == "LEAST_REQUEST"  # what `simple` says: unset


def test_consistent_hash_at_subset_and_port_level() -> None:
    c = clusters(
        SERVICE
        + dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer: {simple: ROUND_ROBIN}
              portLevelSettings:
              - port: {number: 81}
                loadBalancer: {consistentHash: {httpQueryParameterName: q}}
            subsets:
            - name: v1
              labels: {version: v1}
              trafficPolicy:
                loadBalancer: {consistentHash: {httpHeaderName: x-v1}}
                portLevelSettings:
                - port: {number: 81}
                  loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 1h}}}
            - name: plain
              labels: {version: v1}
            """
        )
    )
    got = {name.rsplit("|", 1)[0]: (x.lb, x.hash) for name, x in c.items()}
    assert got == {
        "outbound|80|": ("ROUND_ROBIN", None),
        "outbound|81|": ("LEAST_REQUEST", ir.HashPolicy(source="query", name="q")),
        "outbound|80|v1": ("LEAST_REQUEST", ir.HashPolicy(source="header", name="x-v1")),
        "outbound|81|v1": (
            "LEAST_REQUEST",
            ir.HashPolicy(source="cookie", name="c", cookie_ttl_ms=3_600_000),
        ),
        "outbound|80|plain": ("ROUND_ROBIN", None),
        "outbound|81|plain": ("LEAST_REQUEST", ir.HashPolicy(source="query", name="q")),
    }


def test_subset_without_load_balancer_inherits_the_dr_one() -> None:
    c = clusters(
        SERVICE
        + dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer: {consistentHash: {useSourceIp: true}}
            subsets:
            - name: v1
              labels: {version: v1}
              trafficPolicy:
                portLevelSettings:
                - port: {number: 81}
                  loadBalancer: {simple: RANDOM}
            """
        )
    )
    assert c[f"outbound|80|v1|{FQDN}"].hash == ir.HashPolicy(source="source_ip")
    assert (c[f"outbound|81|v1|{FQDN}"].lb, c[f"outbound|81|v1|{FQDN}"].hash) == ("RANDOM", None)
    assert [e.address for e in c[f"outbound|81|v1|{FQDN}"].endpoints] == ["10.0.0.1:8081"]


# --- the merge precedence -----------------------------------------------------------------

# Each layer: None (absent), "-" (a port-level entry for port 80 without loadBalancer),
# "other" (a port-level entry for port 81 only), or the `simple` value it sets.
Layer = str | None


def _policy(top: Layer, port: Layer) -> r.TrafficPolicy | None:
    if top is None and port is None:
        return None
    data: dict[str, object] = {}
    if top is not None:
        data["loadBalancer"] = {"simple": top}
    if port == "-":
        data["portLevelSettings"] = [{"port": {"number": 80}}]
    elif port == "other":
        data["portLevelSettings"] = [{"port": {"number": 81}, "loadBalancer": {"simple": "RANDOM"}}]
    elif port is not None:
        data["portLevelSettings"] = [
            {"port": {"number": 81}, "loadBalancer": {"simple": "RANDOM"}},
            {"port": {"number": 80}, "loadBalancer": {"simple": port}},
            {"port": {"number": 80}, "loadBalancer": {"simple": "UNSPECIFIED"}},  # 1st wins
        ]
    return msgspec.convert(data, r.TrafficPolicy)


@pytest.mark.parametrize(
    ("dr_top", "dr_port", "sub_top", "sub_port", "expected"),
    [
        # nothing anywhere: the default
        (None, None, None, None, None),
        # DR top level only
        ("ROUND_ROBIN", None, None, None, "ROUND_ROBIN"),
        ("ROUND_ROBIN", "other", None, None, "ROUND_ROBIN"),
        # DR port level beats DR top level, and does not inherit from it
        ("ROUND_ROBIN", "RANDOM", None, None, "RANDOM"),
        ("ROUND_ROBIN", "-", None, None, None),
        (None, "LEAST_CONN", None, None, "LEAST_CONN"),
        # subset top level beats both DR levels
        ("ROUND_ROBIN", None, "LEAST_CONN", None, "LEAST_CONN"),
        ("ROUND_ROBIN", "RANDOM", "LEAST_CONN", None, "LEAST_CONN"),
        ("ROUND_ROBIN", "-", "LEAST_CONN", None, "LEAST_CONN"),
        # a subset policy without loadBalancer for this port inherits the DR's
        ("ROUND_ROBIN", None, None, "other", "ROUND_ROBIN"),
        ("ROUND_ROBIN", "RANDOM", None, "other", "RANDOM"),
        ("ROUND_ROBIN", "-", None, "other", None),
        ("ROUND_ROBIN", "RANDOM", "LEAST_CONN", "other", "LEAST_CONN"),
        # subset port level beats everything, and inherits nothing
        ("ROUND_ROBIN", "RANDOM", "LEAST_CONN", "LEAST_REQUEST", "LEAST_REQUEST"),
        (None, None, None, "RANDOM", "RANDOM"),
        ("ROUND_ROBIN", "RANDOM", "LEAST_CONN", "-", None),
        ("ROUND_ROBIN", None, None, "-", None),
    ],
)
def test_merge_precedence(
    dr_top: Layer, dr_port: Layer, sub_top: Layer, sub_port: Layer, expected: str | None
) -> None:
    lb = load_balancer_for(_policy(dr_top, dr_port), _policy(sub_top, sub_port), 80)
    assert (lb.simple if lb is not None else None) == expected
    if sub_top is None and sub_port is None:  # the default cluster sees the same
        lb = load_balancer_for(_policy(dr_top, dr_port), None, 80)
        assert (lb.simple if lb is not None else None) == expected


def test_locality_lb_setting_follows_the_same_merge() -> None:
    c = clusters(
        textwrap.dedent(
            """\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ext}
            spec:
              hosts: [ext.example.com]
              ports: [{number: 80, name: http, protocol: HTTP}]
              resolution: STATIC
              endpoints:
              - {address: 10.0.0.1, locality: r1/z1}
              - {address: 10.0.0.2, locality: r1/z2}
            ---
            """
        )
        + dr(
            """\
            host: ext.example.com
            trafficPolicy:
              loadBalancer:
                localityLbSetting:
                  distribute: [{from: r1/*, to: {r1/z1: 90, r1/z2: 10}}]
            subsets:
            - name: unweighted
              trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: false}}}
            - name: hashed
              trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
            """
        ),
        locality="r1/z1/s1",
    )
    weights = {n.split("|")[2]: [e.weight for e in c.endpoints] for n, c in c.items()}
    assert weights == {"": [9, 1], "unweighted": [1, 1], "hashed": [1, 1]}


# --- locality distribute ------------------------------------------------------------------

LOCALITY_SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.1.1, locality: us-west/zone1/a, weight: %(w1)d}
  - {address: 10.0.1.2, locality: us-west/zone1/b}
  - {address: 10.0.2.1, locality: us-west/zone2/a}
  - {address: 10.0.2.2, locality: us-west/zone2/b}
  - {address: 10.0.2.3, locality: us-west/zone2}
  - {address: 10.0.3.1, locality: eu-west/zone1/a}
  - {address: 10.0.4.1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: ext.example.com
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        - from: eu-west
          to: {"*": 100}
"""


def _endpoints(proxy: str, w1: int = 1) -> dict[str, int]:
    c = clusters(LOCALITY_SE % {"w1": w1}, locality=proxy)
    return {e.address: e.weight for e in c["outbound|80||ext.example.com"].endpoints}


def _share(weights: dict[str, int], prefix: str) -> Fraction:
    return Fraction(
        sum(w for a, w in weights.items() if a.startswith(prefix)), sum(weights.values())
    )


@pytest.mark.parametrize("w1", [1, 3, 1_000_000, 2**32 - 1])
def test_locality_distribute_weights(w1: int) -> None:
    got = _endpoints("us-west/zone1/a", w1)
    # eu-west and locality-less endpoints get 0% and are dropped
    assert sorted(got) == [
        "10.0.1.1:80",
        "10.0.1.2:80",
        "10.0.2.1:80",
        "10.0.2.2:80",
        "10.0.2.3:80",
    ]
    assert all(1 <= w <= 2**32 - 1 for w in got.values())
    if w1 == 2**32 - 1:  # too large for exact integer shares: rounded ones
        assert abs(float(_share(got, "10.0.1.")) - 0.8) < 1e-4
        return
    assert _share(got, "10.0.1.") == Fraction(80, 100)
    assert _share(got, "10.0.2.") == Fraction(20, 100)
    # within a locality, in proportion to the endpoints' own weights
    assert Fraction(got["10.0.1.1:80"], got["10.0.1.2:80"]) == w1
    assert got["10.0.2.1:80"] == got["10.0.2.2:80"] == got["10.0.2.3:80"]
    if w1 == 1:
        assert got == {
            "10.0.1.1:80": 6,
            "10.0.1.2:80": 6,
            "10.0.2.1:80": 1,
            "10.0.2.2:80": 1,
            "10.0.2.3:80": 1,
        }


def test_locality_distribute_rule_choice() -> None:
    everything = {
        "10.0.1.1:80": 1,
        "10.0.1.2:80": 1,
        "10.0.2.1:80": 1,
        "10.0.2.2:80": 1,
        "10.0.2.3:80": 1,
        "10.0.3.1:80": 1,
        "10.0.4.1:80": 1,
    }
    assert _endpoints("us-west/zone1") == _endpoints("us-west/zone1/a")  # from's * matches ""
    assert _endpoints("us-west/zone2/a") == everything  # no rule from here
    assert _endpoints("") == everything  # the sidecar's locality is unknown
    assert _endpoints("eu-west/zone9") == everything  # "*": 100 keeps every endpoint


def test_endpoint_localities_from_every_source() -> None:
    text = """\
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {ports: [{name: http, port: 80}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-a
          labels: {kubernetes.io/service-name: web, topology.kubernetes.io/region: r1}
        addressType: IPv4
        endpoints:
        - {addresses: [10.0.0.1], zone: z1}
        - {addresses: [10.0.0.2]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-b
          labels: {kubernetes.io/service-name: web}
        addressType: IPv4
        endpoints:
        - {addresses: [10.0.0.3], zone: z2}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: vm}
        spec:
          hosts: [vm.example.com]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          workloadSelector: {labels: {app: vm}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: vm1}
        spec: {address: 10.1.0.1, labels: {app: vm}, locality: r2/z2/s2, weight: 7}
        """
    c = clusters(text)
    got = {e.address: e.locality for e in c[f"outbound|80||{FQDN}"].endpoints}
    assert got == {"10.0.0.1:80": "r1/z1", "10.0.0.2:80": "r1", "10.0.0.3:80": "/z2"}
    [vm] = c["outbound|80||vm.example.com"].endpoints
    assert (vm.locality, vm.weight) == ("r2/z2/s2", 7)


def test_locality_patterns() -> None:
    assert locality_matches("us-west", "us-west/z1/s1")
    assert locality_matches("us-west/*", "us-west")
    assert locality_matches("*", "")
    assert not locality_matches("us-west/z1/s1", "us-west/z1")
    assert not locality_matches("us-west/z1", "us-east/z1")
    assert patterns_overlap("us-west/*", "us-west/z1")
    assert patterns_overlap("us-west", "us-west/*")
    assert not patterns_overlap("us-west/z1/*", "us-west/z2/*")


def test_is_prime_like_envoy() -> None:
    assert [x for x in range(20) if is_prime(x)] == [1, 2, 3, 5, 7, 11, 13, 17, 19]
    assert is_prime(65537)
    assert is_prime(5000011)
    assert not is_prime(65536)


# --- validation ---------------------------------------------------------------------------


def test_load_balancer_problems_with_file_and_line() -> None:
    got = problems(
        dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer:
                simple: ROUND_ROBIN
                consistentHash:
                  httpHeaderName: x
                  useSourceIp: true
            subsets:
            - name: a
              trafficPolicy:
                loadBalancer:
                  consistentHash:
                    httpCookie: {name: "", ttl: soon}
                    maglev: {tableSize: 65536}
            - name: b
              trafficPolicy:
                loadBalancer:
                  consistentHash:
                    httpQueryParameterName: ""
                    maglev: {tableSize: 5000011}
                    ringHash: {minimumRingSize: 9000000}
            - name: c
              trafficPolicy:
                loadBalancer: {consistentHash: {useSourceIp: false, minimumRingSize: 1}}
            - name: d
              trafficPolicy:
                loadBalancer:
                  consistentHash: {httpHeaderName: " ", maglev: {}, minimumRingSize: 8}
            - name: e
              trafficPolicy: {loadBalancer: {consistentHash: {}}}
            """
        )
    )
    lb = "DestinationRule/web: $.spec.trafficPolicy.loadBalancer"
    s = "DestinationRule/web: $.spec.subsets"
    ch = "trafficPolicy.loadBalancer.consistentHash"
    assert got == [
        f"t.yaml:7: {lb}: only one of simple or consistentHash may be set",
        f"t.yaml:9: {lb}.consistentHash: only one hash key may be set"
        " (got httpHeaderName, useSourceIp)",
        f"t.yaml:17: {s}[0].{ch}.httpCookie.name: cookie name must not be empty",
        f'''t.yaml:17: {s}[0].{ch}.httpCookie.ttl: invalid duration "soon"'''
        " (use e.g. 1h, 1m, 1s, 500ms, 1.5s)",
        f"t.yaml:18: {s}[0].{ch}.maglev.tableSize: tableSize must be a prime number for maglev,"
        " got 65536",
        f"t.yaml:22: {s}[1].{ch}: only one of ringHash or maglev may be set",
        f"t.yaml:23: {s}[1].{ch}.httpQueryParameterName: query parameter name must not be empty",
        f"t.yaml:24: {s}[1].{ch}.maglev.tableSize: tableSize must be less than 5000011 for"
        " maglev, got 5000011",
        f"t.yaml:25: {s}[1].{ch}.ringHash.minimumRingSize: must be at most 8388608"
        " (the maximum ring size), got 9000000",
        f"t.yaml:28: {s}[2].{ch}.useSourceIp: useSourceIp: false selects no hash key",
        f"t.yaml:32: {s}[3].{ch}.httpHeaderName: header name must not be empty",
        f"t.yaml:32: {s}[3].{ch}.minimumRingSize: only one of minimumRingSize (deprecated)"
        " or ringHash/maglev may be set",
        f"t.yaml:34: {s}[4].{ch}: one hash key is required: httpHeaderName, httpCookie,"
        " useSourceIp, httpQueryParameterName",
    ]


def test_locality_and_port_level_problems_with_file_and_line() -> None:
    got = problems(
        dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer:
                localityLbSetting:
                  distribute:
                  - from: us-west/zone1/*
                    to: {"us-west/zone1/*": 70, "us-west/zone2/*": 20}
                  - from: us-west
                    to: {"us-*": 100, "a//b": 0, "*/z": 1, "us-west/*": 1}
                  - to: {}
              portLevelSettings:
              - port: {number: 80}
                loadBalancer: {simple: RANDOM}
              - port: {number: 80}
            """
        )
    )
    d = "DestinationRule/web: $.spec.trafficPolicy.loadBalancer.localityLbSetting.distribute"
    p = "DestinationRule/web: $.spec.trafficPolicy.portLevelSettings"
    assert got == [
        f"t.yaml:11: {d}[0].to: locality weights must sum to 100, got 90",
        f't.yaml:12: {d}[1].from: locality "us-west" overlaps with "us-west/zone1/*"',
        f't.yaml:13: {d}[1].to["us-*"]: locality "us-*": a wildcard "*" may only be the whole'
        " last part",
        f't.yaml:13: {d}[1].to["a//b"]: locality "a//b" must not have an empty region, zone'
        " or subzone",
        f't.yaml:13: {d}[1].to["a//b"]: locality weight must be between 1 and 100, got 0',
        f't.yaml:13: {d}[1].to["*/z"]: locality "*/z": a wildcard "*" may only be the whole'
        " last part",
        f"t.yaml:13: {d}[1].to: locality weights must sum to 100, got 102",
        f't.yaml:14: {d}[2]: missing required field "from"',
        f't.yaml:14: {d}[2]: missing required field "to"',
        f"t.yaml:18: {p}[1].port.number: duplicate port 80 (portLevelSettings[0] already sets it)",
        f"t.yaml:18: {p}[1]: port traffic policy must have at least one field besides port",
    ]


def test_locality_overlapping_destinations() -> None:
    got = problems(
        dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer:
                localityLbSetting:
                  distribute:
                  - from: r1
                    to: {"r1/*": 50, "r1/z1": 50}
            """
        )
    )
    assert got == [
        "t.yaml:11: DestinationRule/web: $.spec.trafficPolicy.loadBalancer.localityLbSetting"
        '.distribute[0].to["r1/z1"]: locality "r1/z1" overlaps with "r1/*"'
    ]


def test_valid_policies_load() -> None:
    load_config_text(
        dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer:
                consistentHash:
                  httpCookie: {name: s, path: /, ttl: 0s}
                  maglev: {tableSize: 65537}
                localityLbSetting:
                  enabled: true
                  distribute:
                  - from: "*"
                    to: {"r1/z1/s1": 25, "r1/z1/s2": 25, "r2": 50}
              portLevelSettings:
              - port: {number: 80}
                loadBalancer: {simple: LEAST_CONN}
            """
        )
    )


def test_destination_rule_tls_origination_compiles_with_paths_next_to_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from meshfast.config import CompileOptions, ConfigError, compile_config, load_config

    f = tmp_path / "dr.yaml"
    f.write_text("""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s}
spec:
  hosts: [s.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: s}
spec:
  host: s.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      caCertificates: certs/ca.pem
      clientCertificate: /abs/client.pem
      privateKey: certs/key.pem
      sni: api.example.com
      subjectAltNames: [api.example.com]
  subsets:
  - name: plain
    trafficPolicy: {tls: {mode: DISABLE}}
""")
    snap = compile_config(load_config([f]), CompileOptions())
    clusters = {c.name: c for c in snap.clusters}
    tls = clusters["outbound|80||s.example.com"].tls
    assert tls is not None
    assert tls.ca_certs == str(tmp_path / "certs" / "ca.pem")
    assert tls.client_cert == "/abs/client.pem"
    assert tls.private_key == str(tmp_path / "certs" / "key.pem")
    assert (tls.sni, tls.subject_alt_names) == ("api.example.com", ("api.example.com",))
    assert clusters["outbound|80|plain|s.example.com"].tls is None

    f.write_text(f.read_text().replace("mode: MUTUAL", "mode: ISTIO_MUTUAL"))
    with pytest.raises(ConfigError) as err:
        load_config([f])
    assert any("ISTIO_MUTUAL" in p.message for p in err.value.problems)
