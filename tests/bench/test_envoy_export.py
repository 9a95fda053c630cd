"""`meshfast export-envoy`: the Envoy bootstrap carries the IR's semantics, and Envoy accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

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
