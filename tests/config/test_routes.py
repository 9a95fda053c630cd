"""VirtualService http[] actions: decode, validate and compile to the IR."""

from __future__ import annotations

import base64
import textwrap

import msgspec
import pytest

from meshfast.config import CompileOptions, ConfigError, compile_config, ir, load_config_text
from meshfast.config.routes import DEFAULT_RETRY, GRPC_STATUS, parse_retry_on

from ..samples import SAMPLES

FQDN = "reviews.default.svc.cluster.local"

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: shadow}
spec: {ports: [{name: http, port: 8080}, {name: http-admin, port: 9080}]}
---
"""


def vs(http: str) -> str:
    """A VirtualService for reviews with the given ``http:`` list (YAML, unindented)."""
    body = textwrap.indent(textwrap.dedent(http), "  ")
    return (
        SERVICES
        + "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        + "metadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n"
        + body
    )


def routes(http: str, **options: object) -> tuple[ir.Route, ...]:
    config = load_config_text(vs(http))
    snap = compile_config(config, CompileOptions(**options))  # type: ignore[arg-type]
    [table] = [t for t in snap.route_tables if t.name == "outbound"]
    [vh] = [v for v in table.virtual_hosts if v.name == f"{FQDN}:9080"]
    return vh.routes


def action(http: str) -> ir.RouteAction:
    return routes(http)[0].action


def problems(http: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(vs(http), source="t.yaml")
    return [(p.line, p.path, p.message) for p in info.value.problems]


ROUTE = "route: [{destination: {host: reviews}}]"


# --- retries ------------------------------------------------------------------------------


def test_default_retry_policy_when_retries_absent() -> None:
    a = action(f"- {ROUTE}")
    assert a.retry == DEFAULT_RETRY
    assert a.retry == ir.RetryPolicy(
        attempts=2,
        retry_on=(
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ),
        retriable_status_codes=(),
        backoff_base_ms=25,
        previous_hosts=True,
    )


def test_default_route_without_virtual_service_gets_default_retries() -> None:
    snap = compile_config(load_config_text(SERVICES.rstrip("-\n")), CompileOptions())
    for table in snap.route_tables:
        for vh in table.virtual_hosts:
            assert [r.action.retry for r in vh.routes] == [DEFAULT_RETRY]


def test_inbound_routes_get_no_retry_policy() -> None:
    text = SERVICES + (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\n"
        "spec:\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n"
        "    defaultEndpoint: 127.0.0.1:8080\n"
    )
    snap = compile_config(load_config_text(text), CompileOptions(app="127.0.0.1:8000"))
    inbound = [t for t in snap.route_tables if t.name.startswith("inbound")]
    assert len(inbound) == 2
    assert all(r.action.retry is None for t in inbound for v in t.virtual_hosts for r in v.routes)


def test_attempts_zero_disables_retries() -> None:
    assert action(f"- {ROUTE}\n  retries: {{attempts: 0}}").retry is None
    assert action(f"- {ROUTE}\n  retries: {{}}").retry is None


def test_retry_fields() -> None:
    a = action(
        f"""\
        - {ROUTE}
          retries:
            attempts: 3
            perTryTimeout: 1.5s
            retryOn: "503,5xx"
            retryIgnorePreviousHosts: false
            backoff: 100ms
        """
    )
    assert a.retry == ir.RetryPolicy(
        attempts=3,
        per_try_timeout_ms=1500,
        retry_on=("5xx", "retriable-status-codes"),
        retriable_status_codes=(503,),
        backoff_base_ms=100,
        previous_hosts=False,
    )


def test_retry_on_defaults_when_only_attempts_given() -> None:
    a = action(f"- {ROUTE}\n  retries: {{attempts: 5}}")
    assert a.retry == ir.RetryPolicy(attempts=5, retry_on=DEFAULT_RETRY.retry_on)


def test_parse_retry_on() -> None:
    assert parse_retry_on("503,5xx") == (("5xx", "retriable-status-codes"), (503,))
    assert parse_retry_on(" reset , 502, 503 ") == (("reset", "retriable-status-codes"), (502, 503))
    assert parse_retry_on("retriable-status-codes,429") == (("retriable-status-codes",), (429,))
    assert parse_retry_on("gateway-error,unavailable") == (("gateway-error", "unavailable"), ())


def test_retry_problems() -> None:
    got = problems(
        f"""\
        - {ROUTE}
          retries:
            attempts: 2
            perTryTimeout: 0s
            retryOn: "5xx,bogus,503,999,"
        - {ROUTE}
          retries: {{perTryTimeout: 1s}}
        """
    )
    assert got == [
        (20, "$.spec.http[0].retries.perTryTimeout", 'duration "0s" must be >= 1ms'),
        (21, "$.spec.http[0].retries.retryOn", '"bogus" is not a retry condition Envoy knows'),
        (21, "$.spec.http[0].retries.retryOn", '"999" is not a retry condition Envoy knows'),
        (21, "$.spec.http[0].retries.retryOn", '"" is not a retry condition Envoy knows'),
        (
            23,
            "$.spec.http[1].retries",
            "perTryTimeout and retryOn need attempts > 0 (attempts 0 disables retries)",
        ),
    ]
    got = problems(f"- {ROUTE}\n  retries: {{attempts: -1}}\n")
    assert got == [
        (18, "$.spec.http[0].retries.attempts", "must be between 0 and 2147483647, got -1")
    ]


# --- fault --------------------------------------------------------------------------------


def test_fault_percentages() -> None:
    a = action(
        f"""\
        - {ROUTE}
          fault:
            delay: {{fixedDelay: 7s, percentage: {{value: 12.3456}}}}
            abort: {{httpStatus: 555, percentage: {{value: 100}}}}
        """
    )
    assert a.fault == ir.Fault(
        delay_ms=7000,
        delay_millionths=123456,
        abort_http_status=555,
        abort_millionths=1_000_000,
    )


def test_fault_missing_percentage_injects_nothing() -> None:
    a = action(f"- {ROUTE}\n  fault: {{delay: {{fixedDelay: 1s}}, abort: {{httpStatus: 503}}}}")
    assert a.fault == ir.Fault(
        delay_ms=1000, delay_millionths=0, abort_http_status=503, abort_millionths=0
    )


def test_fault_deprecated_integer_percent() -> None:
    a = action(f"- {ROUTE}\n  fault: {{delay: {{fixedDelay: 5ms, percent: 25}}}}")
    assert a.fault == ir.Fault(delay_ms=5, delay_millionths=250_000)
    # percentage wins over percent
    a = action(
        f"- {ROUTE}\n  fault:\n    delay:\n"
        "      {fixedDelay: 5ms, percent: 25, percentage: {value: 0.5}}"
    )
    assert a.fault is not None
    assert a.fault.delay_millionths == 5000


@pytest.mark.parametrize(("name", "code"), list(GRPC_STATUS.items()))
def test_fault_grpc_status_names(name: str, code: int) -> None:
    a = action(f"- {ROUTE}\n  fault: {{abort: {{grpcStatus: {name}, percentage: {{value: 50}}}}}}")
    assert a.fault == ir.Fault(abort_grpc_status=code, abort_millionths=500_000)


def test_all_grpc_codes_are_mapped() -> None:
    assert sorted(GRPC_STATUS.values()) == list(range(17))
    assert GRPC_STATUS["UNAVAILABLE"] == 14


def test_fault_problems() -> None:
    # Structural problems (types, ranges) are reported alone for their document.
    got = problems(
        f"""\
        - {ROUTE}
          fault: {{}}
        - {ROUTE}
          fault:
            delay: {{percentage: {{value: 101}}}}
        - {ROUTE}
          fault: {{abort: {{httpStatus: 700}}}}
        - {ROUTE}
          fault: {{delay: {{fixedDelay: 1s, percent: 101}}}}
        """
    )
    assert got == [
        (21, "$.spec.http[1].fault.delay.percentage.value", "must be between 0 and 100, got 101"),
        (23, "$.spec.http[2].fault.abort.httpStatus", "must be between 200 and 599, got 700"),
        (25, "$.spec.http[3].fault.delay.percent", "must be between 0 and 100, got 101"),
    ]
    got = problems(
        f"""\
        - {ROUTE}
          fault: {{}}
        - {ROUTE}
          fault:
            delay: {{percentage: {{value: 10}}}}
            abort: {{grpcStatus: NOPE}}
        - {ROUTE}
          fault: {{abort: {{percentage: {{value: 1}}}}}}
        - {ROUTE}
          fault: {{abort: {{httpStatus: 500, grpcStatus: INTERNAL}}}}
        """
    )
    assert got == [
        (18, "$.spec.http[0].fault", "a fault needs a delay, an abort or both"),
        (21, "$.spec.http[1].fault.delay", 'missing required field "fixedDelay"'),
        (
            22,
            "$.spec.http[1].fault.abort.grpcStatus",
            '"NOPE" is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND)',
        ),
        (24, "$.spec.http[2].fault.abort", "one of httpStatus or grpcStatus is required"),
        (26, "$.spec.http[3].fault.abort", "only one of httpStatus or grpcStatus may be set"),
    ]


# --- mirrors ------------------------------------------------------------------------------


def test_mirror_percentage_absent_is_everything() -> None:
    a = action(f"- {ROUTE}\n  mirror: {{host: shadow, port: {{number: 8080}}}}")
    assert a.mirrors == (ir.Mirror("outbound|8080||shadow.default.svc.cluster.local", 1_000_000),)


def test_mirror_percentage_zero_is_no_mirror() -> None:
    a = action(f"- {ROUTE}\n  mirror: {{host: shadow}}\n  mirrorPercentage: {{value: 0}}")
    assert a.mirrors == ()
    a = action(f"- {ROUTE}\n  mirror: {{host: shadow}}\n  mirrorPercent: 0")
    assert a.mirrors == ()


def test_mirror_resolves_like_route_destinations() -> None:
    # shadow has two ports: without a port the route table's own port (9080) is used.
    a = action(
        f"- {ROUTE}\n  mirror: {{host: shadow, subset: v2}}\n  mirrorPercentage: {{value: 12.5}}"
    )
    assert a.mirrors == (ir.Mirror("outbound|9080|v2|shadow.default.svc.cluster.local", 125_000),)
    a = action(f"- {ROUTE}\n  mirror: {{host: shadow}}\n  mirrorPercent: 30")
    assert a.mirrors[0].millionths == 300_000
    a = action(f"- {ROUTE}\n  mirror: {{host: shadow}}\n  mirror_percent: 40")
    assert a.mirrors[0].millionths == 400_000


def test_mirrors_list() -> None:
    a = action(
        f"""\
        - {ROUTE}
          mirrors:
          - destination: {{host: shadow, port: {{number: 8080}}}}
          - destination: {{host: reviews}}
            percentage: {{value: 0.0001}}
          - destination: {{host: ext.example.com}}
            percentage: {{value: 0}}
        """
    )
    assert a.mirrors == (
        ir.Mirror("outbound|8080||shadow.default.svc.cluster.local", 1_000_000),
        ir.Mirror(f"outbound|9080||{FQDN}", 1),
    )


def test_mirror_problems() -> None:
    got = problems(
        f"""\
        - {ROUTE}
          mirror: {{host: shadow, subset: Bad_Subset}}
          mirrors: [{{destination: {{host: " "}}}}]
          mirrorPercent: 10
          mirror_percent: 10
        """
    )
    assert got == [
        (18, "$.spec.http[0].mirror.subset", 'subset "Bad_Subset" is not a valid DNS label'),
        (19, "$.spec.http[0].mirrors", "mirror and mirrors are mutually exclusive"),
        (19, "$.spec.http[0].mirrors[0].destination.host", "host must not be empty"),
        (21, "$.spec.http[0].mirror_percent", "mirrorPercent is already set"),
    ]
    got = problems(f"- {ROUTE}\n  mirror: {{host: shadow}}\n  mirrorPercentage: {{value: -1}}")
    assert got == [
        (19, "$.spec.http[0].mirrorPercentage.value", "must be between 0 and 100, got -1")
    ]


def test_traffic_mirroring_template_sample() -> None:
    path = SAMPLES / "tests/integration/pilot/testdata/traffic-mirroring-template.yaml"
    template = path.read_text()

    def render(percent: float | None) -> tuple[ir.Mirror, ...]:
        text = template.replace("{{.Name}}", "b").replace("{{.MirrorHost}}", "c")
        lines = text.splitlines()
        out = []
        for line in lines:
            if "{{- if" in line or "{{- end" in line:
                continue
            if "mirrorPercentage" in line and percent is None:
                break
            out.append(line.replace("{{.Percent}}", str(percent)))
        config = load_config_text("\n".join(out) + "\n")
        snap = compile_config(config, CompileOptions())
        [table] = snap.route_tables
        [vh] = table.virtual_hosts
        return vh.routes[0].action.mirrors

    cluster = "outbound|80||c.default.svc.cluster.local"
    assert render(None) == (ir.Mirror(cluster, 1_000_000),)
    assert render(0.0) == ()
    assert render(50.0) == (ir.Mirror(cluster, 500_000),)
    assert render(0.01) == (ir.Mirror(cluster, 100),)


# --- headers ------------------------------------------------------------------------------


def test_route_and_destination_headers() -> None:
    a = action(
        """\
        - route:
          - destination: {host: reviews}
            weight: 80
            headers:
              request: {set: {X-Dest: a}}
              response: {remove: [X-Secret]}
          - destination: {host: shadow}
            weight: 20
          headers:
            request:
              set: {Z-Last: "1", a-first: "100%%"}
              add: {x-add: b}
              remove: [X-Remove, x-remove, a]
            response:
              add: {x-resp: c}
        """
    )
    assert a.request_headers == ir.HeaderOps(
        set=(ir.HeaderValue("a-first", "100%"), ir.HeaderValue("z-last", "1")),
        add=(ir.HeaderValue("x-add", "b"),),
        remove=("a", "x-remove"),
    )
    assert a.response_headers == ir.HeaderOps(add=(ir.HeaderValue("x-resp", "c"),))
    assert a.clusters == (
        ir.WeightedCluster(
            f"outbound|9080||{FQDN}",
            80,
            request_headers=ir.HeaderOps(set=(ir.HeaderValue("x-dest", "a"),)),
            response_headers=ir.HeaderOps(remove=("x-secret",)),
        ),
        ir.WeightedCluster("outbound|9080||shadow.default.svc.cluster.local", 20),
    )


def test_request_authority_header_becomes_an_authority_rewrite() -> None:
    a = action(f"- {ROUTE}\n  headers: {{request: {{set: {{host: new.example, x-a: b}}}}}}")
    assert a.rewrite == ir.Rewrite(authority="new.example")
    assert a.request_headers == ir.HeaderOps(set=(ir.HeaderValue("x-a", "b"),))
    a = action(f"- {ROUTE}\n  headers: {{request: {{add: {{':authority': add.example}}}}}}")
    assert a.rewrite == ir.Rewrite(authority="add.example")


def test_header_problems() -> None:
    got = problems(
        """\
        - route:
          - destination: {host: reviews}
            headers: {request: {set: {host: a}}}
          headers:
            request:
              set: {"bad name": x, X-A: "1", x-a: "2", x-pct: "%DOWNSTREAM_REMOTE_ADDRESS%"}
              remove: [host]
            response:
              set: {":status": "200"}
        - route: [{destination: {host: reviews}}]
          rewrite: {authority: a.example}
          headers: {request: {set: {host: b.example}}}
        """
    )
    assert got == [
        (
            19,
            "$.spec.http[0].route[0].headers.request.set.host",
            "setting the authority per destination is not implemented yet",
        ),
        (
            22,
            '$.spec.http[0].headers.request.set["bad name"]',
            '"bad name" is not a valid header name',
        ),
        (
            22,
            "$.spec.http[0].headers.request.set.x-a",
            'header "x-a" is given twice (names are case-insensitive)',
        ),
        (
            22,
            "$.spec.http[0].headers.request.set.x-pct",
            "header value substitution (%...%) is not implemented yet; write %% for a literal %",
        ),
        (23, "$.spec.http[0].headers.request.remove[0]", 'header "host" cannot be modified here'),
        (
            25,
            '$.spec.http[0].headers.response.set[":status"]',
            'header ":status" cannot be modified here',
        ),
        (
            28,
            "$.spec.http[1].headers.request.set.host",
            "the authority is already rewritten (set it in one place only)",
        ),
    ]


# --- rewrite, redirect, direct response ---------------------------------------------------


def test_rewrite() -> None:
    a = action(f"- {ROUTE}\n  rewrite: {{uri: /v2, authority: up.example}}")
    assert a.rewrite == ir.Rewrite(uri="/v2", authority="up.example")
    a = action(
        f"- {ROUTE}\n  rewrite: {{uriRegexRewrite: {{match: '^/a/(.*)$', rewrite: '/b/\\1'}}}}"
    )
    assert a.rewrite == ir.Rewrite(regex=ir.RegexRewrite("^/a/(.*)$", "/b/\\1"))
    assert action(f"- {ROUTE}").rewrite is None


def test_rewrite_problems() -> None:
    got = problems(
        f"""\
        - {ROUTE}
          rewrite: {{uri: /x, uriRegexRewrite: {{match: "(", rewrite: /y}}}}
        - {ROUTE}
          rewrite: {{}}
        - {ROUTE}
          rewrite: {{uriRegexRewrite: {{match: ^/a}}}}
        """
    )
    assert got[0] == (
        18,
        "$.spec.http[0].rewrite",
        "uri and uriRegexRewrite are mutually exclusive",
    )
    assert got[1][:2] == (18, "$.spec.http[0].rewrite.uriRegexRewrite.match")
    assert got[1][2].startswith("invalid regex '('")
    assert got[2:] == [
        (20, "$.spec.http[1].rewrite", "rewrite must set uri, authority or uriRegexRewrite"),
        (22, "$.spec.http[2].rewrite.uriRegexRewrite", "match and rewrite are both required"),
    ]


def test_redirect() -> None:
    [r1, r2] = routes(
        """\
        - match: [{uri: {prefix: /old}}]
          redirect: {uri: /new, authority: b.example, port: 8443, scheme: https, redirectCode: 308}
          headers: {response: {set: {x-r: "1"}}}
        - redirect: {prefixRewrite: /p, derivePort: FROM_REQUEST_PORT}
          timeout: 5s
        """
    )
    assert r1.action == ir.RouteAction(
        redirect=ir.Redirect(
            scheme="https", authority="b.example", port=8443, path="/new", code=308
        ),
        response_headers=ir.HeaderOps(set=(ir.HeaderValue("x-r", "1"),)),
    )
    assert r2.action == ir.RouteAction(
        redirect=ir.Redirect(derive_port="FROM_REQUEST_PORT", prefix_rewrite="/p", code=301)
    )


def test_redirect_sample() -> None:
    path = SAMPLES / "tests/testdata/config/rule-redirect-injection.yaml"
    config = load_config_text(path.read_text())
    snap = compile_config(config, CompileOptions(namespace="testns"))
    [table] = snap.route_tables
    [vh] = [v for v in table.virtual_hosts if v.name == "redirect.test.istio.io:8080"]
    [route] = vh.routes[:1]
    assert route.action.redirect == ir.Redirect(
        authority="redirect2.test.istio.io", path="/new/path", code=301
    )
    assert route.action.clusters == ()
    assert route.action.retry is None


def test_redirect_problems() -> None:
    got = problems(
        f"""\
        - {ROUTE}
          redirect: {{uri: /a, prefixRewrite: /b, redirectCode: 200, scheme: ftp}}
          fault: {{abort: {{httpStatus: 500}}}}
          rewrite: {{uri: /c}}
        - redirect: {{port: 1, derivePort: FROM_REQUEST_PORT}}
        - redirect: {{redirectCode: 302}}
        """
    )
    only = (
        "only one of route, redirect, directResponse or delegate may be set (got route, redirect)"
    )
    assert got == [
        (17, "$.spec.http[0]", only),
        (
            18,
            "$.spec.http[0].redirect.prefixRewrite",
            "uri and prefixRewrite are mutually exclusive",
        ),
        (18, "$.spec.http[0].redirect.scheme", 'scheme must be "http" or "https", got "ftp"'),
        (
            18,
            "$.spec.http[0].redirect.redirectCode",
            "200 is not a redirect code (301, 302, 303, 307, 308)",
        ),
        (19, "$.spec.http[0].fault", "fault cannot be used with redirect"),
        (20, "$.spec.http[0].rewrite", "rewrite cannot be used with redirect"),
        (21, "$.spec.http[1].redirect.derivePort", "port and derivePort are mutually exclusive"),
        (
            22,
            "$.spec.http[2].redirect",
            "redirect must set uri, prefixRewrite, authority, scheme, port or derivePort",
        ),
    ]


def test_direct_response() -> None:
    data = bytes(range(256))
    [r1, r2, r3] = routes(
        f"""\
        - match: [{{uri: {{exact: /text}}}}]
          directResponse: {{status: 503, body: {{string: "héllo"}}}}
        - match: [{{uri: {{exact: /bytes}}}}]
          directResponse: {{status: 200, body: {{bytes: {base64.b64encode(data).decode()}}}}}
        - directResponse: {{status: 204}}
        """
    )
    assert r1.action == ir.RouteAction(direct_response=ir.DirectResponse(503, "héllo".encode()))
    assert r2.action.direct_response == ir.DirectResponse(200, data)
    assert r3.action.direct_response == ir.DirectResponse(204, None)
    assert r3.action.retry is None


def test_direct_response_problems() -> None:
    got = problems(
        """\
        - directResponse: {status: 200, body: {string: a, bytes: YQ==}}
        - directResponse: {status: 200, body: {bytes: "not base64!"}}
        - directResponse: {status: 200}
          route: [{destination: {host: reviews}}]
          fault: {delay: {fixedDelay: 1s}}
        """
    )
    assert got == [
        (17, "$.spec.http[0].directResponse.body", "only one of string or bytes may be set"),
        (18, "$.spec.http[1].directResponse.body.bytes", "bytes must be base64"),
        (
            19,
            "$.spec.http[2]",
            "only one of route, redirect, directResponse or delegate may be set"
            " (got route, directResponse)",
        ),
        (21, "$.spec.http[2].fault", "fault cannot be used with directResponse"),
    ]
    got = problems("- directResponse: {status: 600}\n- directResponse: {}\n")
    assert got == [
        (17, "$.spec.http[0].directResponse.status", "must be between 200 and 599, got 600"),
        (18, "$.spec.http[1].directResponse", 'missing required field "status"'),
    ]


# --- CORS ---------------------------------------------------------------------------------


def test_cors_policy() -> None:
    a = action(
        f"""\
        - {ROUTE}
          corsPolicy:
            allowOrigins:
            - {{exact: "https://a.example"}}
            - {{prefix: "https://b"}}
            - {{regex: ".*c"}}
            allowMethods: [GET, POST]
            allowHeaders: [content-type]
            exposeHeaders: [x-custom]
            maxAge: 24h
            allowCredentials: true
            unmatchedPreflights: IGNORE
        """
    )
    assert a.cors == ir.Cors(
        allow_origins=(
            ir.StringMatch("exact", "https://a.example"),
            ir.StringMatch("prefix", "https://b"),
            ir.StringMatch("regex", ".*c"),
        ),
        allow_methods=("GET", "POST"),
        allow_headers=("content-type",),
        expose_headers=("x-custom",),
        max_age_s=86400,
        allow_credentials=True,
        forward_unmatched_preflights=False,
    )


def test_cors_defaults_and_deprecated_allow_origin() -> None:
    a = action(f"- {ROUTE}\n  corsPolicy: {{allowOrigin: ['*', https://x.example]}}")
    assert a.cors == ir.Cors(
        allow_origins=(ir.StringMatch("exact", "*"), ir.StringMatch("exact", "https://x.example")),
        max_age_s=None,
        allow_credentials=None,
        forward_unmatched_preflights=True,
    )
    for value in ("UNSPECIFIED", "FORWARD"):
        a = action(f"- {ROUTE}\n  corsPolicy: {{unmatchedPreflights: {value}}}")
        assert a.cors is not None
        assert a.cors.forward_unmatched_preflights is True
    a = action(f"- {ROUTE}\n  corsPolicy: {{maxAge: 1m30s, allowCredentials: false}}")
    assert a.cors == ir.Cors(max_age_s=90, allow_credentials=False)


def test_cors_sample() -> None:
    path = SAMPLES / "tests/testdata/config/rule-default-route-cors-policy.yaml"
    snap = compile_config(load_config_text(path.read_text()), CompileOptions(namespace="testns"))
    [table] = snap.route_tables
    [vh] = table.virtual_hosts
    assert vh.routes[0].action.cors == ir.Cors(
        allow_origins=(ir.StringMatch("exact", "http://foo.example"),),
        allow_methods=("POST", "GET", "OPTIONS"),
        allow_headers=("content-type",),
        expose_headers=("x-custom-header",),
        max_age_s=300,
        allow_credentials=True,
    )


def test_cors_problems() -> None:
    got = problems(
        f"""\
        - {ROUTE}
          corsPolicy:
            allowOrigins: [{{exact: ""}}, {{regex: "("}}]
            allowMethods: [GET, get]
            allowHeaders: ["*", "bad header"]
            exposeHeaders: [ok]
            maxAge: 1500ms
        """
    )
    assert got[0] == (
        19,
        "$.spec.http[0].corsPolicy.allowOrigins[0]",
        "a non-empty exact, prefix or regex is required",
    )
    assert got[1][:2] == (19, "$.spec.http[0].corsPolicy.allowOrigins[1].regex")
    assert got[2:] == [
        (20, "$.spec.http[0].corsPolicy.allowMethods[1]", '"get" is not an HTTP method'),
        (
            21,
            "$.spec.http[0].corsPolicy.allowHeaders[1]",
            '"bad header" is not a valid header name',
        ),
        (23, "$.spec.http[0].corsPolicy.maxAge", 'maxAge "1500ms" must be whole seconds'),
    ]


# --- misc ---------------------------------------------------------------------------------


def test_one_of_route_redirect_direct_response_required() -> None:
    assert problems("- timeout: 1s\n") == [
        (17, "$.spec.http[0]", "one of route, redirect, directResponse or delegate is required")
    ]


def test_forward_action_carries_everything() -> None:
    a = action(
        f"""\
        - {ROUTE}
          timeout: 2s
          rewrite: {{uri: /}}
          fault: {{abort: {{httpStatus: 503, percentage: {{value: 1}}}}}}
          mirror: {{host: reviews}}
          corsPolicy: {{allowMethods: [GET]}}
        """
    )
    assert a == ir.RouteAction(
        clusters=(ir.WeightedCluster(f"outbound|9080||{FQDN}", 100),),
        timeout_ms=2000,
        rewrite=ir.Rewrite(uri="/"),
        retry=DEFAULT_RETRY,
        fault=ir.Fault(abort_http_status=503, abort_millionths=10_000),
        mirrors=(ir.Mirror(f"outbound|9080||{FQDN}"),),
        cors=ir.Cors(allow_methods=("GET",)),
    )


def test_snapshot_with_every_action_round_trips() -> None:
    config = load_config_text(
        vs(
            f"""\
            - match: [{{uri: {{prefix: /r}}}}]
              redirect: {{uri: /x}}
            - match: [{{uri: {{prefix: /d}}}}]
              directResponse: {{status: 418, body: {{bytes: AAEC}}}}
            - {ROUTE}
              headers: {{request: {{set: {{a: b}}}}}}
              retries: {{attempts: 1, retryOn: "503"}}
              fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 1}}}}}}
              mirror: {{host: reviews}}
              corsPolicy: {{allowOrigins: [{{prefix: https://}}], maxAge: 1s}}
            """
        )
    )
    snap = compile_config(config, CompileOptions())
    assert msgspec.msgpack.decode(ir.encode(snap), type=ir.Snapshot) == snap


def test_stat_prefix_and_retry_remote_localities() -> None:
    from meshfast.config import CompileOptions, compile_config, load_config_text

    text = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s}
spec:
  hosts: [s.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: s}
spec:
  hosts: [s.example.com]
  http:
  - match: [{uri: {prefix: /a}, statPrefix: api}]
    retries: {attempts: 2, retryRemoteLocalities: true}
    route: [{destination: {host: s.example.com}}]
"""
    snap = compile_config(load_config_text(text), CompileOptions())
    (table,) = [t for t in snap.route_tables if t.name == "outbound"]
    route = table.virtual_hosts[0].routes[0]
    assert route.stat_prefix == "api"
    assert route.action.retry is not None
    assert route.action.retry.remote_localities
