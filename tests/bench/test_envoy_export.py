"""`meshfast export-envoy`: the Envoy bootstrap carries the IR's semantics, and Envoy accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from meshfast.bench import envoy_export, tools
from meshfast.bench.envoy_export import ExportError, bootstrap
from meshfast.cli import main
from meshfast.config import CompileOptions, compile_config, ir, load_config_text

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9081}, labels: {version: v1}}
  - {address: 127.0.0.2, ports: {http: 9082}, labels: {version: v2}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db]
  addresses: [10.9.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: mysql, protocol: TCP}]
  endpoints: [{address: 127.0.0.4}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}, x-debug: {}}
      withoutHeaders: {x-skip: {prefix: "yes"}}
      queryParams: {beta: {exact: "1"}}
      method: {exact: GET}
    route:
    - destination: {host: reviews, subset: v2}
    timeout: 1.5s
  - name: api
    match:
    - uri: {regex: "/api/v[0-9]+/.*"}
    - uri: {prefix: /Static/}
      ignoreUriCase: true
    route:
    - destination: {host: reviews, subset: v1}
  - name: canary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"""


def compiled(text: str = MESH) -> ir.Snapshot:
    config = load_config_text(text, source="mesh.yaml")
    return compile_config(config, CompileOptions(outbound="127.0.0.1:15001"))


@pytest.fixture(scope="module")
def boot() -> dict[str, Any]:
    return bootstrap(compiled(), admin_port=19000)


def _listener(boot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in boot["static_resources"]["listeners"] if x["name"] == name)


def _cluster(boot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in boot["static_resources"]["clusters"] if c["name"] == name)


def _hcm(boot: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = _listener(boot, "outbound")["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    return typed


def _routes(boot: dict[str, Any], vhost: str) -> list[dict[str, Any]]:
    vhosts = _hcm(boot)["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = next(v for v in vhosts if v["name"] == vhost)["routes"]
    return routes


def test_fairness_settings(boot: dict[str, Any]) -> None:
    hcm = _hcm(boot)
    assert hcm["generate_request_id"] is False
    assert hcm["codec_type"] == "AUTO"
    assert "access_log" not in hcm
    router = hcm["http_filters"][-1]
    assert router["name"] == "envoy.filters.http.router"
    assert router["typed_config"]["dynamic_stats"] is False
    assert hcm["route_config"]["validate_clusters"] is False
    assert boot["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19000,
    }
    assert "access_log" not in boot["admin"]
    for cluster in boot["static_resources"]["clusters"]:
        (threshold,) = cluster["circuit_breakers"]["thresholds"]
        assert threshold["max_requests"] >= 1_000_000
        assert threshold["max_connections"] >= 1_000_000
    command = envoy_export.envoy_command("envoy", "x.yaml", workers=1)
    assert "--disable-hot-restart" in command
    assert command[command.index("--concurrency") + 1] == "1"


def test_domains_and_route_order(boot: dict[str, Any]) -> None:
    vhosts = {v["name"]: v for v in _hcm(boot)["route_config"]["virtual_hosts"]}
    reviews = vhosts["reviews.default.svc.cluster.local:9080"]
    assert "reviews:9080" in reviews["domains"]
    assert "reviews" in reviews["domains"]
    # First match wins in both: the IR's order is kept (the regex route expands to two).
    assert [r["name"] for r in reviews["routes"]] == ["jason", "api", "api", "canary"]


def test_header_route(boot: dict[str, Any]) -> None:
    jason = _routes(boot, "reviews.default.svc.cluster.local:9080")[0]
    match = jason["match"]
    assert match["prefix"] == "/"
    headers = {h["name"]: h for h in match["headers"]}
    assert headers[":method"]["string_match"] == {"exact": "GET"}
    assert headers["end-user"]["string_match"] == {"exact": "jason"}
    assert headers["x-debug"] == {"name": "x-debug", "present_match": True}
    skip = headers["x-skip"]
    assert skip["invert_match"] is True
    assert skip["string_match"] == {"prefix": "yes"}
    assert skip["treat_missing_header_as_empty"] is True
    assert match["query_parameters"] == [{"name": "beta", "string_match": {"exact": "1"}}]
    action = jason["route"]
    assert action["cluster"] == "outbound|9080|v2|reviews.default.svc.cluster.local"
    assert action["timeout"] == "1.500s"
    retry = compiled().route_tables[0].virtual_hosts[1].routes[0].action.retry
    if retry is None:  # meshfast does not retry: neither does Envoy, explicitly
        assert action["retry_policy"] == {"num_retries": 0}
    else:  # the IR's policy, one to one
        policy = action["retry_policy"]
        assert policy["num_retries"] == retry.attempts
        assert policy["retry_on"] == ",".join(retry.retry_on)


def test_no_retry_policy_means_no_retries() -> None:
    action = ir.RouteAction(clusters=(ir.WeightedCluster("a", 100),))
    assert action.retry is None
    assert envoy_export.route_action(action)["retry_policy"] == {"num_retries": 0}


def test_retry_policy_translation() -> None:
    retry = ir.RetryPolicy(
        attempts=3,
        per_try_timeout_ms=250,
        retry_on=("5xx", "retriable-status-codes"),
        retriable_status_codes=(503, 504),
        backoff_base_ms=25,
        previous_hosts=True,
    )
    action = ir.RouteAction(clusters=(ir.WeightedCluster("a", 100),), retry=retry)
    policy = envoy_export.route_action(action)["retry_policy"]
    assert policy["num_retries"] == 3
    assert policy["retry_on"] == "5xx,retriable-status-codes"
    assert policy["per_try_timeout"] == "0.250s"
    assert policy["retriable_status_codes"] == [503, 504]
    assert policy["retry_back_off"] == {"base_interval": "0.025s"}
    assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_regex_and_ignore_case_routes(boot: dict[str, Any]) -> None:
    regex, static = _routes(boot, "reviews.default.svc.cluster.local:9080")[1:3]
    assert regex["match"] == {"safe_regex": {"regex": "/api/v[0-9]+/.*"}}
    assert static["match"] == {"prefix": "/Static/", "case_sensitive": False}
    assert regex["route"]["timeout"] == "0s"  # no timeout, as in meshfast (Envoy's default: 15s)


def test_weighted_split(boot: dict[str, Any]) -> None:
    canary = _routes(boot, "reviews.default.svc.cluster.local:9080")[3]
    assert canary["match"] == {"prefix": "/"}
    split = canary["route"]["weighted_clusters"]["clusters"]
    assert split == [
        {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "weight": 80},
        {"name": "outbound|9080|v2|reviews.default.svc.cluster.local", "weight": 20},
    ]
    assert "total_weight" not in canary["route"]["weighted_clusters"]


def test_clusters_lb_and_endpoints(boot: dict[str, Any]) -> None:
    base = _cluster(boot, "outbound|9080||reviews.default.svc.cluster.local")
    assert base["type"] == "STATIC"
    assert base["lb_policy"] == "ROUND_ROBIN"
    assert base["connect_timeout"] == "10s"
    endpoints = base["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [
        (e["endpoint"]["address"]["socket_address"]["port_value"], e["load_balancing_weight"])
        for e in endpoints
    ] == [(9081, 1), (9082, 3)]
    assert _cluster(boot, "outbound|9080|v2|reviews.default.svc.cluster.local")["lb_policy"] == (
        "RANDOM"
    )
    assert "typed_extension_protocol_options" not in base


def test_http2_cluster(boot: dict[str, Any]) -> None:
    grpc = _cluster(boot, "outbound|7070||ratings.default.svc.cluster.local")
    assert grpc["lb_policy"] == "LEAST_REQUEST"  # Istio's default, as meshfast
    options = grpc["typed_extension_protocol_options"][envoy_export.HTTP_OPTIONS_KEY]
    assert options["@type"] == envoy_export.HTTP_OPTIONS_TYPE
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}


def test_tcp_listener(boot: dict[str, Any]) -> None:
    tcp = _listener(boot, "outbound|tcp|3306")
    assert tcp["address"]["socket_address"] == {"address": "10.9.0.1", "port_value": 3306}
    (chain,) = tcp["filter_chains"]
    (proxy,) = chain["filters"]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    assert proxy["typed_config"]["cluster"] == "outbound|3306||db.default.svc.cluster.local"


def test_route_without_destination_is_envoys_no_cluster() -> None:
    snapshot = ir.Snapshot(
        listeners=(ir.Listener(name="l", address="127.0.0.1:1", route_table="t"),),
        route_tables=(
            ir.RouteTable(
                name="t",
                virtual_hosts=(
                    ir.VirtualHost(
                        name="v",
                        domains=("*",),
                        routes=(
                            ir.Route(
                                name="r",
                                match_=ir.RouteMatch(),
                                action=ir.RouteAction(
                                    clusters=(
                                        ir.WeightedCluster("a", 0),
                                        ir.WeightedCluster("b", 0),
                                    )
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
    route = bootstrap(snapshot)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][
        0
    ]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]
    assert route["route"]["cluster"] == envoy_export.MISSING_CLUSTER


def test_features_not_translated_are_refused() -> None:
    redirect = ir.Redirect(scheme="https", derive_port="FROM_REQUEST_PORT")
    action = ir.RouteAction(redirect=redirect)
    snapshot = ir.Snapshot(
        listeners=(ir.Listener(name="l", address="127.0.0.1:1", route_table="t"),),
        route_tables=(
            ir.RouteTable(
                name="t",
                virtual_hosts=(
                    ir.VirtualHost(
                        name="v",
                        domains=("*",),
                        routes=(ir.Route(name="r", match_=ir.RouteMatch(), action=action),),
                    ),
                ),
            ),
        ),
    )
    with pytest.raises(ExportError, match=r"route r: this redirect is not translated"):
        bootstrap(snapshot)


def test_unknown_fields_are_refused() -> None:
    """A field the IR gains later is refused until the export learns it (never dropped)."""

    class Action(ir.RouteAction, frozen=True):
        shiny: int = 0

    action = Action(clusters=(ir.WeightedCluster("a", 100),), shiny=1)
    route = ir.Route(name="r", match_=ir.RouteMatch(), action=action)
    with pytest.raises(ExportError, match=r"route r: shiny: not translated to Envoy yet"):
        bootstrap(one_route_snapshot(route))
    plain = ir.Route(name="r", match_=ir.RouteMatch(), action=Action(clusters=action.clusters))
    assert bootstrap(one_route_snapshot(plain))


def one_route_snapshot(*routes: ir.Route) -> ir.Snapshot:
    return ir.Snapshot(
        listeners=(ir.Listener(name="outbound", address="127.0.0.1:15001", route_table="t"),),
        route_tables=(
            ir.RouteTable(
                name="t",
                virtual_hosts=(ir.VirtualHost(name="v", domains=("*",), routes=routes),),
            ),
        ),
        clusters=(
            ir.Cluster(name="a", endpoints=(ir.Endpoint(address="127.0.0.1:9001"),)),
            ir.Cluster(name="b", endpoints=(ir.Endpoint(address="127.0.0.1:9002"),)),
        ),
    )


def actions_snapshot() -> ir.Snapshot:
    """Every route action the export translates, on one virtual host."""
    a = ir.WeightedCluster("a", 100)
    ops = ir.HeaderOps(
        set=(ir.HeaderValue("x-set", "1"),),
        add=(ir.HeaderValue("x-add", "2"),),
        remove=("x-gone",),
    )
    return one_route_snapshot(
        ir.Route(
            name="moved",
            match_=ir.RouteMatch(path=ir.StringMatch(kind="prefix", value="/old")),
            action=ir.RouteAction(redirect=ir.Redirect(path="/new", code=302)),
        ),
        ir.Route(
            name="teapot",
            match_=ir.RouteMatch(path=ir.StringMatch(kind="exact", value="/tea")),
            action=ir.RouteAction(direct_response=ir.DirectResponse(418, b"short and stout")),
        ),
        ir.Route(
            name="main",
            match_=ir.RouteMatch(),
            action=ir.RouteAction(
                clusters=(
                    ir.WeightedCluster("a", 90, request_headers=ops),
                    ir.WeightedCluster("b", 10),
                ),
                rewrite=ir.Rewrite(
                    uri="/v1/",
                    authority="backend",
                    regex=None,
                ),
                request_headers=ops,
                response_headers=ir.HeaderOps(set=(ir.HeaderValue("x-resp", "3"),)),
                retry=ir.RetryPolicy(attempts=2, retry_on=("connect-failure",)),
                mirrors=(ir.Mirror("b", 250_000), ir.Mirror("a")),
            ),
        ),
        ir.Route(
            name="faulty",
            match_=ir.RouteMatch(path=ir.StringMatch(kind="prefix", value="/faulty")),
            action=ir.RouteAction(
                clusters=(a,),
                fault=ir.Fault(
                    delay_ms=5,
                    delay_millionths=500_000,
                    abort_http_status=503,
                    abort_millionths=100_000,
                ),
                cors=ir.Cors(
                    allow_origins=(ir.StringMatch(kind="exact", value="https://a.example"),),
                    allow_methods=("GET", "POST"),
                    max_age_s=60,
                    allow_credentials=True,
                ),
            ),
        ),
        ir.Route(
            name="one-with-headers",
            match_=ir.RouteMatch(path=ir.StringMatch(kind="regex", value="/re/(.*)")),
            action=ir.RouteAction(
                clusters=(ir.WeightedCluster("a", 100, response_headers=ops),),
                rewrite=ir.Rewrite(regex=ir.RegexRewrite(pattern="/re/(.*)", substitution="/\\1")),
            ),
        ),
        ir.Route(name="plain", match_=ir.RouteMatch(), action=ir.RouteAction(clusters=(a,))),
    )


def test_route_actions() -> None:
    boot = bootstrap(actions_snapshot())
    routes = {r["name"]: r for r in _routes(boot, "v")}
    assert routes["moved"]["redirect"] == {"response_code": "FOUND", "path_redirect": "/new"}
    assert "route" not in routes["moved"]
    assert routes["teapot"]["direct_response"] == {
        "status": 418,
        "body": {"inline_string": "short and stout"},
    }
    main_route = routes["main"]
    action = main_route["route"]
    assert action["prefix_rewrite"] == "/v1/"
    assert action["host_rewrite_literal"] == "backend"
    assert action["retry_policy"]["num_retries"] == 2
    assert main_route["request_headers_to_add"] == [
        {"header": {"key": "x-set", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-add", "value": "2"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
    ]
    assert main_route["request_headers_to_remove"] == ["x-gone"]
    assert main_route["response_headers_to_add"][0]["header"] == {"key": "x-resp", "value": "3"}
    first, second = action["weighted_clusters"]["clusters"]
    assert first["request_headers_to_add"] == main_route["request_headers_to_add"]
    assert "request_headers_to_add" not in second
    # One destination with header operations keeps them (Envoy has them per ClusterWeight).
    one = routes["one-with-headers"]["route"]
    assert one["weighted_clusters"]["clusters"][0]["name"] == "a"
    assert one["weighted_clusters"]["clusters"][0]["response_headers_to_remove"] == ["x-gone"]
    assert one["regex_rewrite"] == {"pattern": {"regex": "/re/(.*)"}, "substitution": "/\\1"}
    assert routes["plain"]["route"]["cluster"] == "a"
    assert action["request_mirror_policies"] == [
        {
            "cluster": "b",
            "runtime_fraction": {"default_value": {"numerator": 250_000, "denominator": "MILLION"}},
        },
        {"cluster": "a"},
    ]
    per_filter = routes["faulty"]["typed_per_filter_config"]
    fault = per_filter[envoy_export.FAULT_FILTER]
    assert fault["delay"] == {
        "fixed_delay": "0.005s",
        "percentage": {"numerator": 500_000, "denominator": "MILLION"},
    }
    assert fault["abort"]["http_status"] == 503
    cors = per_filter[envoy_export.CORS_FILTER]
    assert cors["allow_origin_string_match"] == [{"exact": "https://a.example"}]
    assert cors["allow_methods"] == "GET,POST"
    assert cors["max_age"] == "60"
    assert cors["allow_credentials"] is True
    # The filters are in the chain only because a route uses them: CORS, fault, router.
    names = [f["name"] for f in _hcm(boot)["http_filters"]]
    assert names == [
        envoy_export.CORS_FILTER,
        envoy_export.FAULT_FILTER,
        "envoy.filters.http.router",
    ]


def test_no_extra_filters_without_faults_or_cors(boot: dict[str, Any]) -> None:
    assert [f["name"] for f in _hcm(boot)["http_filters"]] == ["envoy.filters.http.router"]


def hashing_snapshot() -> ir.Snapshot:
    """Consistent-hash clusters (ring on a header, Maglev on a generated cookie), localities."""
    base = one_route_snapshot(
        ir.Route(
            name="by-user",
            match_=ir.RouteMatch(path=ir.StringMatch(kind="prefix", value="/user")),
            action=ir.RouteAction(clusters=(ir.WeightedCluster("a", 100),)),
        ),
        ir.Route(
            name="by-cookie",
            match_=ir.RouteMatch(),
            action=ir.RouteAction(clusters=(ir.WeightedCluster("b", 100),)),
        ),
    )
    clusters = (
        ir.Cluster(
            name="a",
            endpoints=(
                ir.Endpoint(address="127.0.0.1:9001", locality="us-east1/us-east1-b"),
                ir.Endpoint(address="127.0.0.1:9002", locality="us-east1/us-east1-c/rack7"),
                ir.Endpoint(address="127.0.0.1:9003", locality="us-east1/us-east1-b"),
            ),
            hash=ir.HashPolicy(source="header", name="x-user", table_size=2048),
        ),
        ir.Cluster(
            name="b",
            endpoints=(ir.Endpoint(address="127.0.0.1:9004"),),
            hash=ir.HashPolicy(
                source="cookie",
                name="session",
                cookie_ttl_ms=0,
                cookie_path="/",
                algorithm="maglev",
                table_size=65537,
            ),
        ),
    )
    return ir.Snapshot(listeners=base.listeners, route_tables=base.route_tables, clusters=clusters)


def test_consistent_hashing_and_localities() -> None:
    boot = bootstrap(hashing_snapshot())
    routes = {r["name"]: r for r in _routes(boot, "v")}
    assert routes["by-user"]["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert routes["by-cookie"]["route"]["hash_policy"] == [
        {"cookie": {"name": "session", "ttl": "0s", "path": "/"}}
    ]
    a, b = _cluster(boot, "a"), _cluster(boot, "b")
    assert a["lb_policy"] == "RING_HASH"
    assert a["ring_hash_lb_config"] == {"minimum_ring_size": 2048}
    assert b["lb_policy"] == "MAGLEV"
    assert b["maglev_lb_config"] == {"table_size": 65537}
    groups = a["load_assignment"]["endpoints"]
    assert [g["locality"] for g in groups] == [
        {"region": "us-east1", "zone": "us-east1-b"},
        {"region": "us-east1", "zone": "us-east1-c", "sub_zone": "rack7"},
    ]
    assert [len(g["lb_endpoints"]) for g in groups] == [2, 1]
    assert all("priority" not in g for g in groups)
    assert "locality" not in b["load_assignment"]["endpoints"][0]


def test_connection_pool_limits_become_circuit_breakers() -> None:
    base = compiled()
    limited = msgspec.structs.replace(
        base.clusters[0], limits=ir.ConnectionLimits(max_connections=3, max_retries=0)
    )
    snap = msgspec.structs.replace(base, clusters=(limited, *base.clusters[1:]))
    (threshold,) = _cluster(bootstrap(snap), limited.name)["circuit_breakers"]["thresholds"]
    assert threshold == {
        "priority": "DEFAULT",
        "max_connections": 3,
        "max_pending_requests": envoy_export.CIRCUIT_BREAKER_MAX,
        "max_requests": envoy_export.CIRCUIT_BREAKER_MAX,
        "max_retries": 0,
    }


def test_cli_writes_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(MESH)
    out = tmp_path / "envoy.yaml"
    argv = ["export-envoy", "-c", str(config), "--admin-port", "19001", "-o", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert text.startswith("# Envoy bootstrap exported by `meshfast export-envoy`")
    assert "--concurrency 1 --disable-hot-restart" in text
    loaded = yaml.safe_load(text)
    assert loaded["admin"]["address"]["socket_address"]["port_value"] == 19001
    assert main(["export-envoy", "-c", str(config), "--admin-port", "19001"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == loaded


def test_cli_refuses_a_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(MESH.replace("weight: 80", "weight: lots"))
    assert main(["export-envoy", "-c", str(config)]) == 1
    assert "weight" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.parametrize("which", ["mesh", "actions", "hashing"])
def test_envoy_accepts_the_bootstrap(which: str, tmp_path: Path) -> None:
    """Envoy's own validation (`--mode validate`) of the export; installs Envoy if missing."""
    envoy = tools.envoy_binary()
    snapshot = {"mesh": compiled, "actions": actions_snapshot, "hashing": hashing_snapshot}[which]()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_export.bootstrap_yaml(snapshot, admin_port=19002))
    done = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout + done.stderr


# === TLS: SNI-routed passthrough and termination ===

SIDECAR_TLS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec:
  hosts: [api.example.com, www.example.com, db.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints: [{address: 127.0.0.5}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vault}
spec:
  hosts: [vault]
  addresses: [10.96.0.7]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8200, name: https-api, protocol: HTTPS}]
  endpoints: [{address: 127.0.0.6}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com, www.example.com]
  tls:
  - match: [{sniHosts: [api.example.com], port: 443}]
    route: [{destination: {host: www.example.com}}]
  - match: [{sniHosts: [www.example.com, api.example.com]}]
    route:
    - {destination: {host: api.example.com}, weight: 30}
    - {destination: {host: www.example.com}, weight: 70}
"""

EXTERNAL = "outbound|443||{}.example.com"


def _chains(boot: dict[str, Any], listener: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _listener(boot, listener)["filter_chains"]}


def _proxy(chain: dict[str, Any]) -> dict[str, Any]:
    (proxy,) = chain["filters"]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    typed: dict[str, Any] = proxy["typed_config"]
    return typed


def test_sidecar_tls_passthrough_by_sni() -> None:
    boot = bootstrap(compiled(SIDECAR_TLS))
    listener = _listener(boot, "outbound|tls|443")
    (inspector,) = listener["listener_filters"]
    assert inspector["name"] == "envoy.filters.listener.tls_inspector"
    assert inspector["typed_config"]["@type"] == envoy_export.TLS_INSPECTOR_TYPE
    assert listener["listener_filters_timeout"] == "10s"  # meshfast's ClientHello deadline
    chains = listener["filter_chains"]
    # The IR's order; api.example.com of the second rule is taken by the first (meshfast's
    # first match), so it is not repeated where Envoy would find it first.
    assert [(c["name"], c["filter_chain_match"]) for c in chains] == [
        ("api.tls.0", {"transport_protocol": "tls", "server_names": ["api.example.com"]}),
        ("api.tls.1", {"transport_protocol": "tls", "server_names": ["www.example.com"]}),
        ("db.example.com", {"transport_protocol": "tls", "server_names": ["db.example.com"]}),
    ]
    assert _proxy(chains[0])["cluster"] == EXTERNAL.format("www")
    assert _proxy(chains[1])["weighted_clusters"] == {
        "clusters": [
            {"name": EXTERNAL.format("api"), "weight": 30},
            {"name": EXTERNAL.format("www"), "weight": 70},
        ]
    }
    assert _proxy(chains[2])["cluster"] == EXTERNAL.format("db")
    # One service on the port and no rule: the catch-all is the chain without server_names.
    vault = _listener(boot, "outbound|tls|8200")
    assert vault["address"]["socket_address"] == {"address": "10.96.0.7", "port_value": 8200}
    (chain,) = vault["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "tls"}
    assert _proxy(chain)["cluster"] == "outbound|8200||vault.default.svc.cluster.local"
    assert "transport_socket" not in chain  # passthrough: never terminated


def sni_snapshot() -> ir.Snapshot:
    """Routes whose first-match order differs from Envoy's most-specific-name order."""

    def route(name: str, hosts: tuple[str, ...], cluster: str) -> ir.SniRoute:
        return ir.SniRoute(name, hosts, (ir.WeightedCluster(cluster, 100),))

    return ir.Snapshot(
        listeners=(
            ir.Listener(
                name="sni",
                address="127.0.0.1:9443",
                protocol="tls",
                sni_routes=(
                    route("exact", ("Pay.Example.com",), "a"),
                    route("wide", ("*.example.com",), "b"),
                    route("shadowed", ("api.example.com", "api.other.org"), "c"),
                    route("deeper", ("*.eu.example.com",), "c"),
                    route("all", ("*.org", "*"), "d"),
                    route("late", ("late.net",), "a"),
                    route("late", ("later.net",), "a"),
                ),
            ),
        ),
        clusters=tuple(
            ir.Cluster(name=n, endpoints=(ir.Endpoint(address=f"127.0.0.{i}:443"),))
            for i, n in enumerate("abcd", 1)
        ),
    )


def _meshfast_pick(routes: tuple[ir.SniRoute, ...], sni: str) -> str | None:
    """rust/proxy/src/tls.rs `sni_matches` with the first-match loop of tcp_proxy.rs."""

    def matches(pattern: str, name: str) -> bool:
        pattern = pattern.lower()
        if pattern == "*":
            return True
        if pattern.startswith("*"):
            return len(name) > len(pattern) - 1 and name.endswith(pattern[1:])
        return pattern == name

    sni = sni.lower()
    return next((r.name for r in routes if any(matches(p, sni) for p in r.sni_hosts)), None)


def _envoy_pick(chains: list[dict[str, Any]], sni: str) -> str | None:
    """Envoy's choice among chains differing only in server_names: the exact name, then
    `*` + each suffix from the first dot on (longest first), then the chain without names."""
    by_name: dict[str, str] = {
        n: c["name"] for c in chains for n in c["filter_chain_match"].get("server_names", ())
    }
    default: str | None = next(
        (c["name"] for c in chains if "server_names" not in c["filter_chain_match"]), None
    )
    sni = sni.lower()
    if not sni:
        return default
    if sni in by_name:
        return by_name[sni]
    pos = sni.find(".", 1)
    while pos != -1 and pos < len(sni) - 1:
        if f"*{sni[pos:]}" in by_name:
            return by_name[f"*{sni[pos:]}"]
        pos = sni.find(".", pos + 1)
    return default


def test_sni_first_match_kept_under_envoys_most_specific_match() -> None:
    snapshot = sni_snapshot()
    chains = envoy_export.sni_filter_chains(snapshot.listeners[0])
    assert [(c["name"], c["filter_chain_match"].get("server_names")) for c in chains] == [
        ("exact", ["pay.example.com"]),  # lowercased: meshfast matches lowercased SNI
        ("wide", ["*.example.com"]),
        ("shadowed", ["api.other.org"]),  # api.example.com goes to "wide" in meshfast
        # "deeper" has no chain: *.eu.example.com is all within *.example.com, taken before.
        ("all", None),  # `*`: the default chain (its *.org adds nothing)
        # "late" routes come after `*`: unreachable in meshfast, so no chain in Envoy.
    ]
    assert all(c["filter_chain_match"]["transport_protocol"] == "tls" for c in chains)
    routes = snapshot.listeners[0].sni_routes
    for sni in [
        "pay.example.com",
        "PAY.example.COM",
        "api.example.com",
        "x.eu.example.com",
        "a.b.example.com",
        "example.com",
        "api.other.org",
        "other.org",
        "late.net",
        "",
    ]:
        assert _envoy_pick(chains, sni) == _meshfast_pick(routes, sni), sni


def test_sni_without_default_and_without_routes() -> None:
    def listener(*routes: ir.SniRoute) -> ir.Listener:
        return ir.Listener(name="l", address="127.0.0.1:1", protocol="tls", sni_routes=routes)

    only = ir.SniRoute("only", ("a.example.com",), (ir.WeightedCluster("a", 100),))
    chains = envoy_export.sni_filter_chains(listener(only))
    assert [c["filter_chain_match"] for c in chains] == [
        {"transport_protocol": "tls", "server_names": ["a.example.com"]}
    ]  # no default chain: other names match nothing and are closed, as in meshfast
    (empty,) = envoy_export.sni_filter_chains(listener())
    assert empty["filter_chain_match"] == {"transport_protocol": "tls"}
    assert _proxy(empty)["cluster"] == envoy_export.MISSING_CLUSTER
    no_destination = ir.SniRoute("none", ("*",), ())
    (chain,) = envoy_export.sni_filter_chains(listener(no_destination))
    assert _proxy(chain)["cluster"] == envoy_export.MISSING_CLUSTER


@pytest.mark.parametrize(
    ("listener", "message"),
    [
        (
            ir.Listener(
                name="l",
                address="127.0.0.1:1",
                protocol="tls",
                sni_routes=(ir.SniRoute("r", ("api*.example.com",), ()),),
            ),
            r"SNI route r: SNI host 'api\*.example.com' is not an exact name, \*.suffix or \*",
        ),
        (
            ir.Listener(
                name="l",
                address="127.0.0.1:1",
                protocol="tls",
                sni_routes=(ir.SniRoute("r", ("",), ()),),
            ),
            r"SNI host '' is not an exact name",
        ),
        (
            ir.Listener(
                name="l",
                address="127.0.0.1:1",
                protocol="tls",
                sni_routes=(
                    ir.SniRoute(
                        "r",
                        ("*",),
                        (ir.WeightedCluster("a", 1, request_headers=ir.HeaderOps(remove=("x",))),),
                    ),
                ),
            ),
            r"SNI route r -> a: request_headers: not translated",
        ),
        (
            ir.Listener(
                name="l",
                address="127.0.0.1:1",
                protocol="tcp",
                tls=ir.TlsServer(cert_chain="c.pem", private_key="k.pem"),
            ),
            r"listener l \(tcp\): tls: not translated",
        ),
        (
            ir.Listener(
                name="l",
                address="127.0.0.1:1",
                protocol="http",
                sni_routes=(ir.SniRoute("r", ("*",), ()),),
            ),
            r"listener l \(http\): sni_routes: not translated",
        ),
        (
            ir.Listener(
                name="l",
                address="127.0.0.1:1",
                protocol="tls",
                tcp_routes=(ir.TcpRoute("t", ()),),
            ),
            r"listener l \(tls\): tcp_routes: not translated",
        ),
    ],
)
def test_tls_fields_not_translated_are_refused(listener: ir.Listener, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        bootstrap(ir.Snapshot(listeners=(listener,)))


GATEWAY_TLS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.7}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends}
spec:
  hosts: [a.example.com, b.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints: [{address: 127.0.0.8}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.com]
    tls:
      mode: %(mode)s
      serverCertificate: %(cert)s
      privateKey: %(key)s
      caCertificates: %(ca)s
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: [bookinfo.com]
  gateways: [edge]
  http:
  - route: [{destination: {host: httpbin.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sni}
spec:
  hosts: ["*"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com], port: 9443}]
    route: [{destination: {host: a.example.com, port: {number: 443}}}]
  - match: [{sniHosts: ["*"]}]
    route: [{destination: {host: b.example.com, port: {number: 443}}}]
"""


def gateway_snapshot(folder: Path, mode: str = "SIMPLE") -> ir.Snapshot:
    """Gateway mode: an HTTPS server (certificates made in ``folder``) and a passthrough one."""
    from ..certs import MiniCA

    ca = MiniCA(folder)
    server = ca.issue("bookinfo", ["bookinfo.com"])
    text = GATEWAY_TLS % {
        "mode": mode,
        "cert": server.cert,
        "key": server.key,
        "ca": ca.path,
    }
    config = load_config_text(text, source=str(folder / "gateway.yaml"))
    return compile_config(config, CompileOptions(gateway=True, gateway_bind="127.0.0.1"))


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL"])
def test_gateway_https_terminates_tls(tmp_path: Path, mode: str) -> None:
    snapshot = gateway_snapshot(tmp_path, mode)
    boot = bootstrap(snapshot)
    (chain,) = _listener(boot, "gateway|8443")["filter_chains"]
    socket = chain["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    tls = socket["typed_config"]
    assert tls["@type"] == envoy_export.DOWNSTREAM_TLS_TYPE
    common = tls["common_tls_context"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": str(tmp_path / "bookinfo.pem")},
            "private_key": {"filename": str(tmp_path / "bookinfo-key.pem")},
        }
    ]
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_params"] == {
        "tls_minimum_protocol_version": "TLSv1_2",
        "tls_maximum_protocol_version": "TLSv1_3",
    }
    assert chain["transport_socket_connect_timeout"] == "10s"
    if mode == "MUTUAL":
        assert tls["require_client_certificate"] is True
        assert common["validation_context"] == {
            "trusted_ca": {"filename": str(tmp_path / "ca.pem")}
        }
    else:
        assert "require_client_certificate" not in tls
        assert "validation_context" not in common
    hcm = chain["filters"][0]["typed_config"]
    assert hcm["codec_type"] == "AUTO"  # HTTP/1.1 or h2 by ALPN
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    assert vhost["domains"] == ["bookinfo.com:8443", "bookinfo.com"]
    assert vhost["routes"][0]["route"]["cluster"] == "outbound|8000||httpbin.local"

    # The passthrough server: `*` narrowed to the server's *.example.com, after a.example.com.
    chains = _listener(boot, "gateway|9443")["filter_chains"]
    assert [c["filter_chain_match"]["server_names"] for c in chains] == [
        ["a.example.com"],
        ["*.example.com"],
    ]
    assert [_proxy(c)["cluster"] for c in chains] == [
        "outbound|443||a.example.com",
        "outbound|443||b.example.com",
    ]


def test_tls_1_3_only() -> None:
    tls = ir.TlsServer(cert_chain="c.pem", private_key="k.pem", min_version="TLSV1_3")
    params = envoy_export.downstream_tls(tls, "l")["typed_config"]["common_tls_context"]
    assert params["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"


def yes_no_snapshot() -> ir.Snapshot:
    """Names Envoy's YAML reader would take for booleans if left bare."""
    a = (ir.WeightedCluster("a", 100),)
    listener = ir.Listener(
        name="n",
        address="127.0.0.1:9443",
        protocol="tls",
        sni_routes=(ir.SniRoute("y", ("a.com",), a), ir.SniRoute("N", ("*",), a)),
    )
    return ir.Snapshot(
        listeners=(listener,),
        clusters=(ir.Cluster(name="a", endpoints=(ir.Endpoint(address="127.0.0.1:1"),)),),
    )


def test_yaml_quotes_yes_no_names() -> None:
    text = envoy_export.bootstrap_yaml(yes_no_snapshot())
    for name in ("n", "y", "N"):
        assert f"name: '{name}'" in text
    assert yaml.safe_load(text)["static_resources"]["listeners"][0]["name"] == "n"


@pytest.mark.e2e
@pytest.mark.parametrize(
    "which", ["sidecar-tls", "sni", "yes-no", "gateway-simple", "gateway-mutual"]
)
def test_envoy_accepts_the_tls_bootstraps(which: str, tmp_path: Path) -> None:
    """`--mode validate` loads the certificate files too, so they are real ones here."""
    envoy = tools.envoy_binary()
    if which == "sidecar-tls":
        snapshot = compiled(SIDECAR_TLS)
    elif which == "sni":
        snapshot = sni_snapshot()
    elif which == "yes-no":
        snapshot = yes_no_snapshot()
    else:
        snapshot = gateway_snapshot(tmp_path, which.removeprefix("gateway-").upper())
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_export.bootstrap_yaml(snapshot, admin_port=19003))
    done = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout + done.stderr
