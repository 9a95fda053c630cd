"""DestinationRule outlierDetection, locality failover priorities and warmup."""

from __future__ import annotations

import textwrap

import pytest

from meshfast.config import CompileOptions, ConfigError, compile_config, ir, load_config_text
from meshfast.config.policy import label_level, locality_level

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

# The sidecar is at us-east/zone1/sub1.
PROXY = "us-east/zone1/sub1"
ENDPOINTS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, locality: us-east/zone1/sub1, labels: {net: n1, v: a}}  # same subzone
  - {address: 10.0.0.2, locality: us-east/zone1/sub2, labels: {net: n1, v: b}}  # same zone
  - {address: 10.0.0.3, locality: us-east/zone2/sub1, labels: {net: n1, v: a}}  # same region
  - {address: 10.0.0.4, locality: us-west/zone1/sub1, labels: {net: n1, v: b}}  # failover target
  - {address: 10.0.0.5, locality: eu-west/zone1/sub1, labels: {net: n2, v: a}}  # other region
  - {address: 10.0.0.6, labels: {v: a}}  # no locality: another region
---
"""


def dr(spec: str, host: str = "web") -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}}}\n"
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


def outlier(od_yaml: str) -> ir.OutlierDetection | None:
    tp = f"trafficPolicy: {{outlierDetection: {od_yaml}}}\n" if od_yaml else ""
    return clusters(SERVICE + dr(f"host: web\n{tp}"))[f"outbound|80||{FQDN}"].outlier


# --- outlier detection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("od_yaml", "expected"),
    [
        ("", None),
        (
            "{}",
            ir.OutlierDetection(
                consecutive_5xx=5,
                consecutive_gateway=0,
                interval_ms=10_000,
                base_ejection_ms=30_000,
                max_ejection_percent=10,
                min_health_percent=0,
            ),
        ),
        (
            "{consecutive5xxErrors: 7, consecutiveGatewayErrors: 3, interval: 1.5s,"
            " baseEjectionTime: 2m, maxEjectionPercent: 100, minHealthPercent: 50}",
            ir.OutlierDetection(
                consecutive_5xx=7,
                consecutive_gateway=3,
                interval_ms=1500,
                base_ejection_ms=120_000,
                max_ejection_percent=100,
                min_health_percent=50,
            ),
        ),
        # 0 turns the 5xx threshold off; gateway errors stay off at 0
        (
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 0}",
            ir.OutlierDetection(consecutive_5xx=0, consecutive_gateway=0),
        ),
        ("{consecutiveGatewayErrors: 2}", ir.OutlierDetection(consecutive_gateway=2)),
        # maxEjectionPercent 0 is proto3's "unset": istiod leaves Envoy's 10
        ("{maxEjectionPercent: 0}", ir.OutlierDetection(max_ejection_percent=10)),
        # deprecated consecutiveErrors: gateway errors only, as istiod maps it
        (
            "{consecutiveErrors: 4}",
            ir.OutlierDetection(consecutive_5xx=0, consecutive_gateway=4),
        ),
        (
            "{consecutiveErrors: 4, consecutive5xxErrors: 9, consecutiveGatewayErrors: 1}",
            ir.OutlierDetection(consecutive_5xx=0, consecutive_gateway=4),
        ),
        ("{consecutiveErrors: 0}", ir.OutlierDetection()),
    ],
)
def test_outlier_detection_defaults_and_values(
    od_yaml: str, expected: ir.OutlierDetection | None
) -> None:
    assert outlier(od_yaml) == expected


def test_blocks_merge_independently() -> None:
    c = clusters(
        SERVICE
        + dr(
            """\
            host: web
            trafficPolicy:
              loadBalancer: {simple: ROUND_ROBIN}
              outlierDetection: {consecutive5xxErrors: 1}
              portLevelSettings:
              - port: {number: 81}
                loadBalancer: {simple: RANDOM}
            subsets:
            - name: od-only
              labels: {version: v1}
              trafficPolicy: {outlierDetection: {consecutive5xxErrors: 2}}
            - name: lb-only
              labels: {version: v1}
              trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
            - name: port-od
              labels: {version: v1}
              trafficPolicy:
                loadBalancer: {simple: RANDOM}
                portLevelSettings:
                - port: {number: 80}
                  outlierDetection: {consecutive5xxErrors: 3}
            """
        )
    )

    def od(c: ir.Cluster) -> int | None:
        return c.outlier.consecutive_5xx if c.outlier is not None else None

    got = {name.rsplit("|", 1)[0]: (x.lb, od(x)) for name, x in c.items()}
    assert got == {
        "outbound|80|": ("ROUND_ROBIN", 1),
        # a DR port-level entry replaces every block: no outlier detection on port 81
        "outbound|81|": ("RANDOM", None),
        # a subset with only outlierDetection keeps the DR-level loadBalancer
        "outbound|80|od-only": ("ROUND_ROBIN", 2),
        "outbound|81|od-only": ("RANDOM", 2),  # the DR port-level loadBalancer
        # a subset with only loadBalancer keeps the DR-level outlierDetection...
        "outbound|80|lb-only": ("LEAST_REQUEST", 1),
        # ...of the DR's port-level entry, where there is one
        "outbound|81|lb-only": ("LEAST_REQUEST", None),
        # a subset port-level entry with only outlierDetection: the default loadBalancer
        "outbound|80|port-od": ("LEAST_REQUEST", 3),
        "outbound|81|port-od": ("RANDOM", None),
    }


# --- locality failover --------------------------------------------------------------------


def priorities(policy: str, locality: str = PROXY, **options: object) -> list[int]:
    text = ENDPOINTS + dr(f"host: ext.example.com\n{textwrap.dedent(policy)}", "ext")
    c = clusters(text, locality=locality, **options)
    eps = c["outbound|80||ext.example.com"].endpoints
    assert [e.address for e in eps] == [f"10.0.0.{i}:80" for i in range(1, 7)]
    assert all(e.weight == 1 for e in eps)
    return [e.priority for e in eps]


WITH_OUTLIER = "trafficPolicy:\n  outlierDetection: {}\n"
FAILOVER = (
    "trafficPolicy:\n"
    "  outlierDetection: {}\n"
    "  loadBalancer:\n"
    "    localityLbSetting: {failover: [{from: us-east, to: us-west}]}\n"
)


def test_default_failover_priorities_need_outlier_detection() -> None:
    # subzone, zone, region, then every other region (the endpoint without locality too)
    assert priorities(WITH_OUTLIER) == [0, 1, 2, 3, 3, 3]
    # no outlier detection: no priorities
    assert priorities("trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}") == [0] * 6
    # locality load balancing switched off
    off = WITH_OUTLIER + "  loadBalancer: {localityLbSetting: {enabled: false}}\n"
    assert priorities(off) == [0] * 6
    # the sidecar's locality unknown
    assert priorities(WITH_OUTLIER, locality="") == [0] * 6


def test_explicit_failover_region() -> None:
    # us-west right after us-east's own levels, before the other regions
    assert priorities(FAILOVER) == [0, 1, 2, 3, 4, 4]
    # a failover entry for another region does not apply to this sidecar
    other = FAILOVER.replace("from: us-east", "from: ap-south")
    assert priorities(other) == [0, 1, 2, 3, 3, 3]
    # the first entry for the sidecar's region wins
    two = FAILOVER.replace(
        "[{from: us-east, to: us-west}]",
        "[{from: us-east, to: eu-west}, {from: us-east, to: us-west}]",
    )
    assert priorities(two) == [0, 1, 2, 4, 3, 4]
    # from the sidecar in us-west: us-east is just another region
    assert priorities(FAILOVER, locality="us-west/zone1/sub1") == [1, 1, 1, 0, 1, 1]


def test_failover_without_outlier_detection_is_ignored() -> None:
    no_outlier = FAILOVER.replace("  outlierDetection: {}\n", "")
    assert priorities(no_outlier) == [0] * 6
    fp = "trafficPolicy: {loadBalancer: {localityLbSetting: {failoverPriority: [net]}}}"
    assert priorities(fp, labels={"net": "n1"}) == [0] * 6


def test_failover_follows_the_merge() -> None:
    text = ENDPOINTS + dr(
        """\
        host: ext.example.com
        trafficPolicy:
          outlierDetection: {}
        subsets:
        - name: failover
          trafficPolicy:
            loadBalancer:
              localityLbSetting: {failover: [{from: us-east, to: us-west}]}
        - name: near
          labels: {v: b}
          trafficPolicy:
            loadBalancer:
              localityLbSetting: {failover: [{from: us-east, to: us-west}]}
        - name: no-outlier
          trafficPolicy:
            portLevelSettings:
            - port: {number: 80}
              loadBalancer:
                localityLbSetting: {failover: [{from: us-east, to: us-west}]}
        """,
        "ext",
    )
    c = clusters(text, locality=PROXY)
    got = {n.split("|")[2]: [e.priority for e in c.endpoints] for n, c in c.items()}
    assert got == {
        "": [0, 1, 2, 3, 3, 3],
        "failover": [0, 1, 2, 3, 4, 4],  # the DR's outlierDetection enables the subset's
        "near": [0, 1],  # 10.0.0.2 and 10.0.0.4: levels renumbered without gaps
        "no-outlier": [0] * 6,  # the port-level entry has no outlierDetection
    }


def test_failover_priority_labels() -> None:
    tp = WITH_OUTLIER + "  loadBalancer:\n    localityLbSetting:\n      failoverPriority: %s\n"
    topo = "[net, topology.kubernetes.io/region, topology.kubernetes.io/zone]"
    # the sidecar's own labels plus those of its locality
    assert priorities(tp % topo, labels={"net": "n1"}) == [0, 0, 1, 2, 3, 3]
    # the nth label only counts when the first n-1 match
    assert priorities(tp % topo, labels={"net": "n2"}) == [1, 1, 1, 1, 0, 1]
    # a label the sidecar lacks matches nothing: its level and every later one
    assert priorities(tp % topo) == [0] * 6
    # each label on its own: us-west/zone1 has the sidecar's zone name
    zone_first = tp % "[topology.kubernetes.io/zone, net]"
    assert priorities(zone_first, labels={"net": "n1"}) == [0, 0, 2, 0, 1, 2]
    # subzone from the locality
    assert priorities(tp % "[topology.istio.io/subzone]") == [0, 1, 0, 0, 0, 1]
    # key=value: the endpoint's label against the value, whatever the sidecar's labels
    assert priorities(tp % "[v=b]", labels={"v": "a"}) == [1, 0, 1, 0, 1, 1]
    assert priorities(tp % "[net=n1, v]", labels={"v": "a"}) == [0, 1, 0, 1, 2, 2]
    # no sidecar locality: the topology labels are absent, custom labels still count
    assert priorities(tp % "[net]", locality="", labels={"net": "n2"}) == [1, 1, 1, 1, 0, 1]


def test_failover_priority_with_failover() -> None:
    tp = FAILOVER.replace(
        "{failover: [{from: us-east, to: us-west}]}",
        "{failover: [{from: us-east, to: us-west}], failoverPriority: [net]}",
    )
    # label level first (net=n2 before the rest), then the locality level within it
    assert priorities(tp, labels={"net": "n2"}) == [1, 2, 3, 4, 0, 5]
    assert priorities(tp, labels={"net": "n1"}) == [0, 1, 2, 3, 4, 4]


def test_locality_levels() -> None:
    assert locality_level("r/z/s", "r/z/s") == 0
    assert locality_level("r/z", "r/z") == 0
    assert locality_level("r/z", "r/z/s") == 1
    assert locality_level("r/z/s", "r/y/s") == 2
    assert locality_level("r/z/s", "q/z/s") == 3
    assert label_level({"a": "1", "b": "2"}, {"a": "1", "b": "2"}, ["a", "b"]) == 0
    assert label_level({"a": "1", "b": "2"}, {"a": "1", "b": "3"}, ["a", "b"]) == 1
    assert label_level({"a": "1", "b": "2"}, {"a": "0", "b": "2"}, ["a", "b"]) == 2
    assert label_level({}, {"a": "1"}, ["a=1"]) == 0
    assert label_level({}, {}, []) == 0


# --- warmup -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lb_yaml", "expected"),
    [
        ("{simple: ROUND_ROBIN}", None),
        ("{warmup: {duration: 30s}}", ir.Warmup(duration_ms=30_000)),
        (
            "{simple: ROUND_ROBIN, warmup: {duration: 1m, minimumPercent: 25, aggression: 2.5}}",
            ir.Warmup(duration_ms=60_000, min_percent=25.0, aggression=2.5),
        ),
        (
            "{simple: LEAST_CONN, warmup: {duration: 1s, minimumPercent: 0, aggression: 0}}",
            ir.Warmup(duration_ms=1000, min_percent=0.0, aggression=0.0),
        ),
        ("{simple: LEAST_REQUEST, warmupDurationSecs: 45s}", ir.Warmup(duration_ms=45_000)),
        (
            "{warmupDurationSecs: 45s, warmup: {duration: 5s}}",  # warmup wins
            ir.Warmup(duration_ms=5000),
        ),
    ],
)
def test_warmup_forms(lb_yaml: str, expected: ir.Warmup | None) -> None:
    c = clusters(SERVICE + dr(f"host: web\ntrafficPolicy: {{loadBalancer: {lb_yaml}}}\n"))
    assert c[f"outbound|80||{FQDN}"].warmup == expected
    assert c[f"outbound|81||{FQDN}"].warmup == expected


# --- validation ---------------------------------------------------------------------------


def test_semantic_problems_with_file_and_line() -> None:
    got = problems(
        dr(
            """\
            host: web
            trafficPolicy:
              outlierDetection: {interval: 0s, baseEjectionTime: 1.5ms}
              loadBalancer:
                consistentHash: {useSourceIp: true}
                warmup: {duration: 10s}
            subsets:
            - name: a
              trafficPolicy:
                loadBalancer: {simple: RANDOM, warmupDurationSecs: soon}
            - name: b
              trafficPolicy:
                loadBalancer:
                  localityLbSetting:
                    distribute: [{from: r1, to: {r1: 100}}]
                    failover: [{from: r1, to: r2}]
                    failoverPriority: [net]
            - name: c
              trafficPolicy:
                outlierDetection: {}
                loadBalancer:
                  localityLbSetting:
                    failover:
                    - {from: r1, to: r1}
                    - {from: r1/z1, to: "r*"}
                    - {to: r2}
                    failoverPriority: [topology.kubernetes.io/zone, "=x", net]
                portLevelSettings:
                - port: {number: 80}
                  outlierDetection: {interval: 1us}
            """
        )
    )
    tp = "DestinationRule/web: $.spec.trafficPolicy"
    s = "DestinationRule/web: $.spec.subsets"
    loc = "trafficPolicy.loadBalancer.localityLbSetting"
    assert got == [
        f"""t.yaml:7: {tp}.outlierDetection.interval: duration "0s" must be >= 1ms""",
        f"""t.yaml:7: {tp}.outlierDetection.baseEjectionTime: duration "1.5ms": only whole"""
        " milliseconds are supported",
        f"t.yaml:10: {tp}.loadBalancer.warmup: warmup applies only to ROUND_ROBIN and"
        " LEAST_REQUEST, not consistentHash",
        f"""t.yaml:14: {s}[0].trafficPolicy.loadBalancer.warmupDurationSecs: invalid duration"""
        ' "soon" (use e.g. 1h, 1m, 1s, 500ms, 1.5s)',
        f"t.yaml:14: {s}[0].trafficPolicy.loadBalancer.warmupDurationSecs: warmup applies only"
        " to ROUND_ROBIN and LEAST_REQUEST, not RANDOM",
        f"t.yaml:18: {s}[1].{loc}: only one of distribute or failover may be set",
        f"t.yaml:18: {s}[1].{loc}: only one of distribute or failoverPriority may be set",
        f"""t.yaml:28: {s}[2].{loc}.failover[0]: failover from and to must be different"""
        ' regions (both "r1")',
        f"""t.yaml:29: {s}[2].{loc}.failover[1].from: failover "r1/z1" must be a region"""
        ' (no "/")',
        f'''t.yaml:29: {s}[2].{loc}.failover[1].to: failover region "r*" must not contain "*"''',
        f'''t.yaml:30: {s}[2].{loc}.failover[2]: missing required field "from"''',
        f"""t.yaml:31: {s}[2].{loc}.failoverPriority[0]: topology label"""
        ' "topology.kubernetes.io/zone" can not be used together with failover',
        f"""t.yaml:31: {s}[2].{loc}.failoverPriority[1]: label "=x" must have a key""",
        f"""t.yaml:34: {s}[2].trafficPolicy.portLevelSettings[0].outlierDetection.interval:"""
        ' duration "1us" must be >= 1ms',
    ]


def test_structural_problems_with_file_and_line() -> None:
    got = problems(
        dr(
            """\
            host: web
            trafficPolicy:
              outlierDetection:
                consecutive5xxErrors: -1
                maxEjectionPercent: 101
                minHealthPercent: 50.5
                splitExternalLocalOriginErrors: true
              loadBalancer:
                warmup: {minimumPercent: 120, aggression: -1}
            """
        )
    )
    od = "DestinationRule/web: $.spec.trafficPolicy.outlierDetection"
    w = "DestinationRule/web: $.spec.trafficPolicy.loadBalancer.warmup"
    assert got == [
        f"t.yaml:8: {od}.consecutive5xxErrors: must be between 0 and 4294967295, got -1",
        f"t.yaml:9: {od}.maxEjectionPercent: must be between 0 and 100, got 101",
        f"t.yaml:10: {od}.minHealthPercent: expected an integer, got a number",
        f"t.yaml:11: {od}.splitExternalLocalOriginErrors: not implemented yet",
        f"t.yaml:13: {w}.minimumPercent: must be between 0 and 100, got 120",
        f"t.yaml:13: {w}.aggression: must be >= 0, got -1",
        f't.yaml:13: {w}: missing required field "duration"',
    ]


def test_valid_policies_load() -> None:
    load_config_text(
        dr(
            """\
            host: web
            trafficPolicy:
              outlierDetection:
                consecutive5xxErrors: 0
                consecutiveGatewayErrors: 3
                consecutiveErrors: 2
                interval: 1s
                baseEjectionTime: 1m
                maxEjectionPercent: 100
                minHealthPercent: 0
              loadBalancer:
                simple: ROUND_ROBIN
                warmup: {duration: 1ms, minimumPercent: 100, aggression: 1.5}
                localityLbSetting:
                  enabled: true
                  failover: [{from: us-east, to: us-west}, {from: us-west, to: us-east}]
                  failoverPriority: [topology.istio.io/network, "app=web"]
              portLevelSettings:
              - port: {number: 80}
                outlierDetection: {}
            subsets:
            - name: v1
              trafficPolicy:
                # failover with the DR-level outlier detection
                loadBalancer:
                  localityLbSetting: {failover: [{from: a, to: b}]}
                  warmupDurationSecs: 10s
            """
        )
    )
