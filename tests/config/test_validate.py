from __future__ import annotations

import textwrap

import pytest

from meshfast.config import ConfigError, Problem, load_config_text
from meshfast.config.resources import (
    DestinationRule,
    EndpointSlice,
    Service,
    ServiceEntry,
    Sidecar,
    VirtualService,
    WorkloadEntry,
)


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), source="t.yaml")
    return info.value.problems


def messages(text: str) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in problems(text)]


def vs(spec: str, name: str = "reviews") -> str:
    head = f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: {name}
        spec:
        """
    return textwrap.dedent(head) + textwrap.indent(textwrap.dedent(spec), "  ")


def dr(spec: str, name: str = "reviews") -> str:
    return vs(spec, name).replace("kind: VirtualService", "kind: DestinationRule")


def se(spec: str, name: str = "ext") -> str:
    return vs(spec, name).replace("kind: VirtualService", "kind: ServiceEntry")


ROUTE = """\
hosts: [reviews]
http:
- route:
  - destination: {host: reviews}
"""


def test_problem_format_and_config_error() -> None:
    p = Problem("f.yaml", 3, "VirtualService", "r", "$.spec.http[0].fault", "not implemented yet")
    assert str(p) == "f.yaml:3: VirtualService/r: $.spec.http[0].fault: not implemented yet"
    e = ConfigError([p, p])
    assert str(e) == f"{p}\n{p}"
    assert e.problems == [p, p]


BROKEN = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  tpc: []
  http:
  - route:
    - destination:
        host: reviews
      weight: -1
"""


def test_broken_file_reports_both_lines() -> None:
    got = problems(BROKEN)
    assert [str(p) for p in got] == [
        't.yaml:7: VirtualService/reviews: $.spec.tpc: unknown field "tpc"',
        "t.yaml:12: VirtualService/reviews: $.spec.http[0].route[0].weight: "
        "must be between 0 and 2147483647, got -1",
    ]


def test_valid_documents_decode_to_structs() -> None:
    text = """\
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {name: reviews, namespace: prod, labels: {a: b}, uid: x, resourceVersion: "3"}
        spec:
          hosts: [reviews]
          exportTo: ["."]
          http:
          - name: jason
            match:
            - uri: {prefix: /api}
              ignoreUriCase: true
              headers: {end-user: {exact: jason}, x-any: {}}
              withoutHeaders: {x-skip: {regex: "a+"}}
              queryParams: {q: {exact: ""}}
              method: {exact: GET}
              port: 9080
            route:
            - destination: {host: reviews, subset: v2, port: {number: 9080}}
              weight: 100
            timeout: 1.5s
          tcp:
          - match: [{port: 3306}]
            route: [{destination: {host: db}}]
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          exportTo: ["*"]
          trafficPolicy: {loadBalancer: {simple: LEAST_CONN}}
          subsets:
          - name: v1
            labels: {version: v1}
            trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext}
        spec:
          hosts: [api.example.com]
          addresses: [240.0.0.1]
          location: MESH_INTERNAL
          ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
          resolution: STATIC
          endpoints:
          - {address: 10.0.0.1, ports: {http: 8081}, labels: {v: "1"}, weight: 3, locality: r/z,
             network: n1, serviceAccount: sa}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: vm1}
        spec: {address: 10.0.0.9, labels: {app: vm}, ports: {http: 80}, weight: 2}
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: default}
        spec:
          ingress:
          - port: {number: 9080, protocol: HTTP, name: http}
            defaultEndpoint: 127.0.0.1:8080
            captureMode: NONE
          egress: [{hosts: ["./*", "istio-system/*"]}]
          outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: reviews, annotations: {a: b}}
        spec:
          clusterIP: 10.96.0.10
          clusterIPs: [10.96.0.10]
          type: ClusterIP
          selector: {app: reviews}
          ports: [{name: http, port: 9080, targetPort: 9080, protocol: TCP, appProtocol: http}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: reviews-abc, labels: {kubernetes.io/service-name: reviews}}
        addressType: IPv4
        ports: [{name: http, port: 9080, protocol: TCP}]
        endpoints:
        - addresses: [10.1.0.1]
          conditions: {ready: true}
          zone: z1
          targetRef: {kind: Pod, name: reviews-1}
        """
    config = load_config_text(textwrap.dedent(text))
    types = [type(r) for r in config.resources]
    assert types == [
        VirtualService,
        DestinationRule,
        ServiceEntry,
        WorkloadEntry,
        Sidecar,
        Service,
        EndpointSlice,
    ]
    v = config.resources[0]
    assert isinstance(v, VirtualService)
    assert v.metadata.namespace == "prod"
    m = v.spec.http[0].match[0]
    assert m.uri is not None
    assert m.uri.prefix == "/api"
    assert m.ignore_uri_case
    assert m.port == 9080
    assert m.headers["x-any"].exact is None
    assert v.spec.http[0].route[0].destination.port is not None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # unknown field, at any depth
        (ROUTE + "  foo: 1\n", [("$.spec.http[0].foo", 'unknown field "foo"')]),
        # not-implemented fields
        (
            ROUTE
            + "  fault: {delay: {exponentialDelay: 1s}, abort: {http2Error: x}}\n"
            + "  retries: {attempts: 3, retryRemoteLocalities: true}\n",
            [
                ("$.spec.http[0].fault.delay.exponentialDelay", "not implemented yet"),
                ("$.spec.http[0].fault.abort.http2Error", "not implemented yet"),
            ],
        ),
        (
            "hosts: [r]\ntls:\n- match: [{sniHosts: [r], destinationSubnets: [10.0.0.0/8]}]\n"
            "  route: [{destination: {host: r}}]\n",
            [("$.spec.tls[0].match[0].destinationSubnets", "not implemented yet")],
        ),
        (
            "hosts: [r]\ntcp:\n- match: [{sourceSubnet: 10.0.0.0/8, sourceLabels: {a: b}}]\n"
            "  route: [{destination: {host: r}}]\n",
            [("$.spec.tcp[0].match[0].sourceSubnet", "not implemented yet")],
        ),
        # wrong types
        (
            "hosts: reviews\nhttp:\n- route: [{destination: {host: 5}}]\n  timeout: 5\n",
            [
                ("$.spec.hosts", "expected a list, got a string"),
                ("$.spec.http[0].route[0].destination.host", "expected a string, got an integer"),
                ("$.spec.http[0].timeout", "expected a string, got an integer"),
            ],
        ),
        (
            "hosts: [r]\nhttp:\n- match: [{ignoreUriCase: yes, port: 80.5}]\n"
            "  route: [{destination: {host: r}}]\n",
            [("$.spec.http[0].match[0].port", "expected an integer, got a number")],
        ),
        # missing required field
        (
            "hosts: [r]\nhttp:\n- route: [{destination: {subset: v1}}]\n",
            [("$.spec.http[0].route[0].destination", 'missing required field "host"')],
        ),
        # out of range
        (
            "hosts: [r]\nhttp:\n- match: [{port: 70000}]\n  route: [{destination: {host: r}}]\n",
            [("$.spec.http[0].match[0].port", "must be between 1 and 65535, got 70000")],
        ),
    ],
)
def test_structural_problems(spec: str, expected: list[tuple[str, str]]) -> None:
    assert messages(vs(spec)) == expected


def test_bad_enum_value() -> None:
    got = messages(dr("host: r\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}\n"))
    [(path, message)] = got
    assert path == "$.spec.trafficPolicy.loadBalancer.simple"
    assert message.startswith("must be one of")
    assert "ROUND_ROBIN" in message
    assert message.endswith("got 'FASTEST'")


def test_dr_not_implemented_and_passthrough() -> None:
    got = messages(
        dr(
            """\
            host: r
            workloadSelector: {matchLabels: {a: b}}
            trafficPolicy:
              connectionPool: {tcp: {maxConnections: 1, tcpKeepalive: {time: 1s}}}
              outlierDetection: {splitExternalLocalOriginErrors: true}
              loadBalancer: {consistentHash: {useSourceIp: true}, zoneAwareLbSetting: {}}
              tunnel: {targetHost: h, targetPort: 1}
              portLevelSettings:
              - port: {number: 80}
                tls: {mode: SIMPLE}
                connectionPool: {http: {maxRetries: 1, h2UpgradePolicy: UPGRADE}}
                outlierDetection:
                  consecutiveLocalOriginFailures: 3
                  outlierDetectionHttpErrorCodes: [500]
            subsets:
            - name: v1
              trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
            """
        )
    )
    assert got == [
        ("$.spec.workloadSelector", "not implemented yet"),
        ("$.spec.trafficPolicy.connectionPool.tcp.tcpKeepalive", "not implemented yet"),
        (
            "$.spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors",
            "not implemented yet",
        ),
        ("$.spec.trafficPolicy.loadBalancer.zoneAwareLbSetting", "not implemented yet"),
        ("$.spec.trafficPolicy.tunnel", "not implemented yet"),
        (
            "$.spec.trafficPolicy.portLevelSettings[0].connectionPool.http.h2UpgradePolicy",
            "not implemented yet",
        ),
        (
            "$.spec.trafficPolicy.portLevelSettings[0].outlierDetection"
            ".consecutiveLocalOriginFailures",
            "not implemented yet",
        ),
        (
            "$.spec.trafficPolicy.portLevelSettings[0].outlierDetection"
            ".outlierDetectionHttpErrorCodes",
            "not implemented yet",
        ),
    ]
    # PASSTHROUGH is implemented (original-destination clusters): no problem.
    load_config_text(
        textwrap.dedent(
            dr(
                "host: r\nsubsets:\n- name: v1\n"
                "  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n"
            )
        )
    )


def test_subset_names() -> None:
    got = messages(dr("host: r\nsubsets:\n- name: V_1\n- name: ok\n- name: ok\n"))
    assert got == [
        ("$.spec.subsets[0].name", 'subset name "V_1" is not a valid DNS label'),
        ("$.spec.subsets[2].name", 'duplicate subset "ok"'),
    ]
    got = messages(vs("hosts: [r]\nhttp:\n- route: [{destination: {host: r, subset: Bad.1}}]\n"))
    assert got == [
        ("$.spec.http[0].route[0].destination.subset", 'subset "Bad.1" is not a valid DNS label')
    ]


def test_weights() -> None:
    got = messages(
        vs(
            """\
            hosts: [r]
            http:
            - route:
              - {destination: {host: r, subset: a}}
              - {destination: {host: r, subset: b}, weight: 0}
            tcp:
            - route:
              - {destination: {host: r}, weight: 0}
              - {destination: {host: r}, weight: 0}
            """
        )
    )
    assert got == [
        ("$.spec.http[0].route", "with more than one destination the total weight must be > 0"),
        ("$.spec.tcp[0].route", "with more than one destination the total weight must be > 0"),
    ]
    # A single destination needs no weight; 100-sums are fine, other sums too.
    load_config_text(vs("hosts: [r]\nhttp:\n- route: [{destination: {host: r}, weight: 0}]\n"))
    load_config_text(
        vs(
            "hosts: [r]\nhttp:\n- route:\n  - {destination: {host: r}, weight: 1}\n"
            "  - {destination: {host: r}, weight: 2}\n"
        )
    )


def test_string_matches_and_regexes() -> None:
    got = messages(
        vs(
            """\
            hosts: [r]
            http:
            - match:
              - uri: {exact: /a, prefix: /b}
              - uri: {}
              - uri: {regex: "(unclosed"}
              - headers: {x-a: {}, x-b: {regex: "*"}, x-c: {regex: "[z-a]"}, X-Up: {exact: a}}
              - queryParams: {q: {}, r: {regex: "+"}}
              route: [{destination: {host: r}}]
            """
        )
    )
    assert [p for p, _ in got] == [
        "$.spec.http[0].match[0].uri",
        "$.spec.http[0].match[1].uri",
        "$.spec.http[0].match[2].uri.regex",
        "$.spec.http[0].match[3].headers.x-c.regex",
        "$.spec.http[0].match[3].headers.X-Up",
        "$.spec.http[0].match[4].queryParams.r.regex",
    ]
    assert got[0][1] == "only one of exact, prefix or regex may be set (got exact, prefix)"
    assert got[1][1] == "one of exact, prefix or regex is required"
    assert got[2][1].startswith("invalid regex '(unclosed': missing )")
    assert got[4][1] == 'header name "X-Up" must be lowercase'


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("5", 'invalid duration "5" (use e.g. 1h, 1m, 1s, 500ms, 1.5s)'),
        ("1x", 'invalid duration "1x" (use e.g. 1h, 1m, 1s, 500ms, 1.5s)'),
        ("0s", 'duration "0s" must be >= 1ms'),
        ("500us", 'duration "500us" must be >= 1ms'),
    ],
)
def test_bad_durations(timeout: str, message: str) -> None:
    got = messages(
        vs(f"hosts: [r]\nhttp:\n- route: [{{destination: {{host: r}}}}]\n  timeout: {timeout!r}\n")
    )
    assert got == [("$.spec.http[0].timeout", message)]


@pytest.mark.parametrize("timeout", ["1h", "1m", "1s", "500ms", "1.5s", "1m30s", "1ms"])
def test_good_durations(timeout: str) -> None:
    load_config_text(
        vs(f"hosts: [r]\nhttp:\n- route: [{{destination: {{host: r}}}}]\n  timeout: {timeout}\n")
    )


def test_vs_hosts_gateways_and_route() -> None:
    got = messages(vs("hosts: []\ngateways: [mesh, my-gw, ns/gw, a/]\nhttp:\n- name: x\n"))
    assert got == [
        ("$.spec.gateways", "a delegate VirtualService (no hosts) cannot have gateways"),
        ("$.spec.gateways[3]", '"a/" must be mesh, a Gateway name or namespace/name'),
        ("$.spec.http[0]", "one of route, redirect, directResponse or delegate is required"),
    ]


def test_unknown_destinations_are_not_errors() -> None:
    load_config_text(
        vs("hosts: [r]\nhttp:\n- route: [{destination: {host: nowhere, subset: v9}}]\n")
    )


def test_service_entry_problems() -> None:
    got = messages(
        se(
            """\
            hosts: []
            ports:
            - {number: 80, name: http, protocol: HTTP}
            - {number: 80, name: http2, protocol: SPDY}
            - {number: 0, name: zero}
            """
        )
    )
    assert got == [("$.spec.ports[2].number", "must be between 1 and 65535, got 0")]
    got = messages(
        se(
            """\
            hosts: []
            ports:
            - {number: 80, name: http, protocol: HTTP}
            - {number: 80, name: http2, protocol: SPDY}
            """
        )
    )
    assert got == [
        ("$.spec.hosts", "at least one host is required"),
        ("$.spec.ports[1].number", "duplicate port 80"),
        (
            "$.spec.ports[1].protocol",
            'unknown protocol "SPDY" (one of GRPC, GRPC-WEB, HTTP, HTTP2, HTTPS, MONGO, MYSQL, '
            "REDIS, TCP, TLS)",
        ),
    ]


def test_service_entry_resolutions() -> None:
    base = "hosts: [a.example.com]\nports: [{number: 80, name: http}]\n"
    assert messages(se(base + "resolution: DYNAMIC_DNS\n")) == [
        ("$.spec.resolution", "DYNAMIC_DNS is not implemented yet")
    ]
    assert messages(se(base + "resolution: STATIC\nendpoints: [{address: db.local}]\n")) == [
        ("$.spec.endpoints[0].address", '"db.local" is not an IP address (resolution STATIC)')
    ]
    assert messages(se(base + "subjectAltNames: [x]\nresolution: DNS\n")) == [
        ("$.spec.subjectAltNames", "not implemented yet")
    ]
    assert messages(
        se("hosts: ['*.example.com']\nports: [{number: 80, name: http}]\nresolution: DNS\n")
    ) == [("$.spec.hosts[0]", "a wildcard host with DNS resolution needs endpoints")]
    got = messages(
        se(
            base + "resolution: STATIC\nendpoints: [{address: 'unix:///tmp/s'}]\n"
            "workloadSelector: {labels: {a: b}}\n"
        )
    )
    assert got == [
        ("$.spec.endpoints[0].address", "unix domain socket endpoints are not implemented yet"),
        ("$.spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive"),
    ]
    load_config_text(se(base + "resolution: DNS\n"))
    assert messages(se(base + "endpoints: [{address: 10.0.0.1}]\n")) == [
        ("$.spec.endpoints", "resolution NONE cannot have endpoints (use STATIC or DNS)")
    ]
    load_config_text(se(base + "resolution: STATIC\nendpoints: [{address: 10.0.0.1}]\n"))


def test_unknown_kinds() -> None:
    got = problems(
        """\
        apiVersion: networking.istio.io/v1
        kind: WorkloadGroup
        metadata: {name: wg}
        spec: {}
        ---
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: deny}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        ---
        apiVersion: v1
        metadata: {name: nokind}
        ---
        - just a list
        """
    )
    assert [str(p) for p in got] == [
        "t.yaml:2: WorkloadGroup/wg: $.kind: WorkloadGroup is not implemented yet",
        't.yaml:4: WorkloadGroup/wg: $.spec: missing required field "template"',
        "t.yaml:7: RequestAuthentication/deny: $.kind: RequestAuthentication is not implemented"
        " yet",
        "t.yaml:11: Deployment/web: $.kind: Deployment is not supported",
        't.yaml:14: -/nokind: $: missing required field "kind"',
        "t.yaml:17: -/-: $: a resource must be a mapping, got a list",
    ]


def test_envelope_problems() -> None:
    got = messages(
        """\
        apiVersion: networking.istio.io/v2
        kind: VirtualService
        metadata: {namespace: x}
        spec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}
        """
    )
    assert got == [
        (
            "$.apiVersion",
            'apiVersion "networking.istio.io/v2" is not supported for VirtualService (use '
            "networking.istio.io/v1, networking.istio.io/v1alpha3, networking.istio.io/v1beta1)",
        ),
        ("$.metadata", 'missing required field "name"'),
    ]
    assert messages("kind: Sidecar\nmetadata: {name: s}\nspec: {}\n") == [
        ("$", 'missing required field "apiVersion"')
    ]


def test_duplicate_resources() -> None:
    one = vs(ROUTE)
    got = problems(
        one
        + "---\n"
        + one
        + "---\n"
        + one.replace("name: reviews\n", "name: reviews\n  namespace: other\n", 1)
    )
    assert [str(p) for p in got] == [
        "t.yaml:14: VirtualService/reviews: $.metadata.name: "
        "duplicate VirtualService default/reviews (first defined at t.yaml:1)"
    ]


def test_tcp_listener_conflicts() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db}
        spec:
          hosts: [db.example.com]
          ports: [{number: 3306, name: mysql, protocol: TCP}]
          resolution: DNS
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: mysql}
        spec:
          ports:
          - {name: http, port: 80}
          - {name: tcp-mysql, port: 3306}
        """
    got = problems(text)
    assert [str(p) for p in got] == [
        "t.yaml:6: ServiceEntry/db: $.spec.ports[0].number: TCP port 3306 of "
        "db.example.com beside mysql.default.svc.cluster.local: TCP services sharing a port"
        " (told apart by address) are not implemented yet"
    ]
    # Valid Istio: `validate --istio` takes it.
    assert [p.severity for p in got] == ["unsupported"]


def test_sidecar_problems() -> None:
    got = messages(
        """\
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: default}
        spec:
          ingress:
          - port: {protocol: HTTP}
          - port: {number: 9080, protocol: HTTP}
            defaultEndpoint: 10.0.0.1:80
          - port: {number: 9081, protocol: HTTP}
            defaultEndpoint: unix:///var/run/app.sock
          egress: [{hosts: [reviews, "./*"]}]
          outboundTrafficPolicy: {mode: ALLOW_ANY}
        """
    )
    assert got == [
        ("$.spec.ingress[0].port", 'missing required field "number"'),
        ("$.spec.ingress[0]", "ingress without defaultEndpoint is not implemented yet"),
        (
            "$.spec.ingress[1].defaultEndpoint",
            '"10.0.0.1:80" must be 127.0.0.1:PORT, [::1]:PORT or 0.0.0.0:PORT',
        ),
        (
            "$.spec.ingress[2].defaultEndpoint",
            "unix domain socket endpoints are not implemented yet",
        ),
        ("$.spec.egress[0].hosts[0]", '"reviews" must be namespace/dnsName'),
    ]
    assert messages(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n"
        "spec: {ingress: [{port: {number: 1}, defaultEndpoint: '127.0.0.1:1', tls: {}}]}\n"
    ) == [("$.spec.ingress[0].tls", "not implemented yet")]


def test_kubernetes_problems() -> None:
    got = messages(
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          ports: [{name: http, port: 80, targetPort: http}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-1}
        addressType: IPv5
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-2, labels: {a: "1"}}
        addressType: IPv4
        """
    )
    assert got == [
        (
            "$.spec.ports[0].targetPort",
            'named targetPort "http" is not implemented yet; use a number',
        ),
        ("$.addressType", "must be one of FQDN, IPv4, IPv6; got 'IPv5'"),
        ("$.metadata.labels", 'missing label "kubernetes.io/service-name"'),
    ]


def test_workload_entry_problems() -> None:
    got = messages(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\n"
        "spec: {labels: {version: 1}, weight: -2}\n"
    )
    assert got == [
        ("$.spec.labels.version", "expected a string, got an integer"),
        ("$.spec.weight", "must be between 0 and 4294967295, got -2"),
    ]
    got = messages(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\nspec: {}\n"
    )
    assert got == [("$.spec", 'missing required field "address" (or "network")')]


def test_every_problem_of_every_document_at_once() -> None:
    text = (
        vs(ROUTE + "  fault: {abort: {http2Error: x}}\n")
        + "---\n"
        + dr("host: r\nbogus: 1\n")
        + "---\nkind: WorkloadGroup\n"
    )
    got = problems(text)
    assert [(p.line, p.kind, p.message) for p in got] == [
        (10, "VirtualService", "not implemented yet"),
        (18, "DestinationRule", 'unknown field "bogus"'),
        (20, "WorkloadGroup", "WorkloadGroup is not implemented yet"),
        (20, "WorkloadGroup", 'missing required field "apiVersion"'),
        (20, "WorkloadGroup", 'missing required field "metadata"'),
        (20, "WorkloadGroup", 'missing required field "spec"'),
    ]


def test_service_entry_rules_of_istios_crd() -> None:
    base = "hosts: [a.example.com]\n"
    assert messages(se(base + "workloadSelector: {labels: {app: 'web*'}}\n")) == [
        ("$.spec.workloadSelector.labels.app", '"web*": a wildcard is not supported in a selector')
    ]
    assert messages(se(base + "addresses: [10.0.0.0/16]\nresolution: DNS\n")) == [
        (
            "$.spec.addresses[0]",
            'CIDR address "10.0.0.0/16" is allowed only with resolution NONE or STATIC'
            " (resolution is DNS)",
        )
    ]
    load_config_text(se(base + "addresses: [10.0.0.0/16]\nports: [{number: 80, name: a}]\n"))
    assert messages(se(base + "ports: [{number: 80, name: a}, {number: 81, name: a}]\n")) == [
        ("$.spec.ports[1].name", 'duplicate port name "a"')
    ]
    rr = "resolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.internal}, {address: b.internal}]\n"
    assert messages(se(base + rr)) == [
        ("$.spec.endpoints[1]", "resolution DNS_ROUND_ROBIN allows at most one endpoint")
    ]
    load_config_text(se(base + "resolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.internal}]\n"))


def test_workload_entry_rules_of_istios_crd() -> None:
    def we(spec: str) -> str:
        return (
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\n"
            f"spec: {spec}\n"
        )

    assert messages(we("{address: 10.0.0.1, ports: {'@': 80, http-2: 81}}")) == [
        (
            '$.spec.ports["@"]',
            'port name "@" must be at most 62 letters, digits and "-",'
            " starting and ending with a letter or digit",
        )
    ]
    # Istio allows a network without an address; meshfast does not serve it yet.
    assert messages(we("{network: net}")) == [
        (
            "$.spec.network",
            "an endpoint without address (reached through its network's gateway)"
            " is not implemented yet",
        )
    ]
    assert messages(we("{address: 'unix://relative'}")) == [
        ("$.spec.address", '"unix://relative": UDS must be an absolute path or abstract socket')
    ]
    assert messages(we("{address: 'unix:///dir/'}")) == [
        ("$.spec.address", '"unix:///dir/": UDS may not be a dir')
    ]
    assert messages(we("{address: 'unix://@foo', ports: {http: 80}}")) == [
        ("$.spec.ports", "UDS may not include ports")
    ]
    assert messages(we("{address: 'unix://@foo'}")) == [
        ("$.spec.address", "unix domain socket endpoints are not implemented yet")
    ]


def test_kinds_checked_but_not_served() -> None:
    got = problems(
        """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: pa}
        spec:
          mtls: {mode: STRICT}
          selector: {matchLabels: {app: web}}
          portLevelMtls: {"8080": {mode: DISABLE}, 9090: {mode: STRICT}, 0: {mode: STRICT}}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: ap}
        spec:
          action: CUSTOM
          rules:
          - from: [{source: {serviceAccounts: [ns/sa], namespaces: [ns], ipBlocks: [10.0.0.0/33]}}]
            to: [{operation: {ports: [http]}}]
            when: [{key: 'request.headers[x]'}]
          bogus: 1
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: ok}
        spec:
          selector: {matchLabels: {app: web}}
          rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]}]
        """
    )
    assert [str(p) for p in got] == [
        "t.yaml:2: PeerAuthentication/pa: $.kind: PeerAuthentication is not implemented yet",
        't.yaml:7: PeerAuthentication/pa: $.spec.portLevelMtls["0"]: port must be between 1'
        " and 65535, got 0",
        # AuthorizationPolicy is served: the unknown field hides none of the rest.
        "t.yaml:12: AuthorizationPolicy/ap: $.spec.provider: a CUSTOM action needs provider.name",
        "t.yaml:13: AuthorizationPolicy/ap: $.spec.action: CUSTOM (an external authorizer) is"
        " not implemented yet: use ALLOW, DENY or AUDIT",
        "t.yaml:15: AuthorizationPolicy/ap: $.spec.rules[0].from[0].source: cannot set"
        " serviceAccounts with namespaces or principals",
        "t.yaml:15: AuthorizationPolicy/ap: $.spec.rules[0].from[0].source.ipBlocks[0]:"
        ' "10.0.0.0/33" is not an IP address or CIDR',
        't.yaml:16: AuthorizationPolicy/ap: $.spec.rules[0].to[0].operation.ports[0]: "http"'
        " is not a port number (0 to 65535)",
        't.yaml:17: AuthorizationPolicy/ap: $.spec.rules[0].when[0]: "request.headers[x]":'
        " values or notValues is required",
        't.yaml:18: AuthorizationPolicy/ap: $.spec.bogus: unknown field "bogus"',
    ]
    # Without the unknown field, the same semantic problems.
    text = textwrap.dedent(
        """\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: ap}
        spec:
          action: CUSTOM
          rules:
          - from: [{source: {serviceAccounts: [ns/sa], namespaces: [ns], ipBlocks: [10.0.0.0/33]}}]
            to: [{operation: {ports: [http]}}]
            when: [{key: 'request.headers[x]'}]
        """
    )
    assert messages(text) == [
        ("$.spec.provider", "a CUSTOM action needs provider.name"),
        (
            "$.spec.action",
            "CUSTOM (an external authorizer) is not implemented yet: use ALLOW, DENY or AUDIT",
        ),
        (
            "$.spec.rules[0].from[0].source",
            "cannot set serviceAccounts with namespaces or principals",
        ),
        (
            "$.spec.rules[0].from[0].source.ipBlocks[0]",
            '"10.0.0.0/33" is not an IP address or CIDR',
        ),
        ("$.spec.rules[0].to[0].operation.ports[0]", '"http" is not a port number (0 to 65535)'),
        ("$.spec.rules[0].when[0]", '"request.headers[x]": values or notValues is required'),
    ]


def test_telemetry_is_checked_but_not_served() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t}
        spec:
          selector: {matchLabels: {app: "*"}}
          targetRefs: [{kind: Service, name: web}]
          metrics:
          - reportingInterval: 0s
            overrides:
            - match: {metric: REQUEST_COUNT, customMetric: mine}
              tagOverrides: {a: {operation: UPSERT}, b: {operation: REMOVE, value: x}}
          tracing:
          - randomSamplingPercentage: 101
            customTags: {env: {}}
        """
    )
    assert messages(text) == [
        ("$.kind", "Telemetry is not implemented yet"),
        ("$.spec.tracing[0].randomSamplingPercentage", "must be between 0 and 100, got 101"),
    ]
    assert messages(
        text.replace("randomSamplingPercentage: 101", "disableSpanReporting: true")
    ) == [
        ("$.kind", "Telemetry is not implemented yet"),
        ("$.spec", "only one of selector, targetRef or targetRefs can be set"),
        ("$.spec.selector.matchLabels.app", '"*": a wildcard is not allowed in a label value'),
        ("$.spec.metrics[0].reportingInterval", 'duration "0s" must be >= 1ms'),
        ("$.spec.metrics[0].overrides[0].match", "only one of metric or customMetric can be set"),
        (
            "$.spec.metrics[0].overrides[0].tagOverrides.a",
            "value must be set when operation is UPSERT",
        ),
        (
            "$.spec.metrics[0].overrides[0].tagOverrides.b.value",
            "value must not be set when operation is REMOVE",
        ),
        (
            "$.spec.tracing[0].customTags.env",
            "exactly one of literal, environment, header or formatter is required",
        ),
    ]


def test_request_authentication_is_checked_but_not_served() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt}
        spec:
          jwtRules:
          - jwksUri: ftp://example.com/jwks
            jwks: "{}"
            timeout: 5s
          - issuer: https://example.com
            jwksUri: https://example.com/jwks
        """
    )
    assert messages(text) == [
        ("$.kind", "RequestAuthentication is not implemented yet"),
        ("$.spec.jwtRules[0]", 'missing required field "issuer"'),
        ("$.spec.jwtRules[0]", "only one of jwks or jwksUri can be set"),
        (
            "$.spec.jwtRules[0].jwksUri",
            '"ftp://example.com/jwks": the url must have scheme http:// or https://',
        ),
    ]
