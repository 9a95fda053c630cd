"""The harness's parts without running a benchmark: parsers, /proc readers, reports, HAProxy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from meshfast import deploy
from meshfast.bench import peers, procs, report
from meshfast.bench.envoy_export import bootstrap
from meshfast.bench.haproxy_export import Unsupported, haproxy_config
from meshfast.bench.harness import entries
from meshfast.bench.load import parse_h2load, parse_wrk, percentile, wrk_script
from meshfast.bench.peers import compile_snapshot
from meshfast.bench.scenarios import (
    FILTER_MODULE,
    FILTER_MODULE_NAME,
    SCENARIOS,
    config_yaml,
    route_paths,
)
from meshfast.config import CompileOptions, compile_config, ir
from meshfast.filters import HttpFilter

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:18080/
  1 threads and 10 connections
  7102 requests in 1.10s, 2.11MB read
Requests/sec:   6469.42
MESHFAST-WRK {"requests":7102,"duration_us":1097780,"connect":0,"read":2,"write":0,\
"status":1,"timeout":0,"p50_us":1333.0,"p90_us":2240.0,"p99_us":2485.0,"p999_us":2799.0}
"""

H2LOAD_OUTPUT = """\
finished in 1.00s, 130001.00 req/s, 22.94MB/s
requests: 130001 total, 130101 started, 130001 done, 129990 succeeded, 11 failed, 0 errored, \
0 timeout
status codes: 129990 2xx, 0 3xx, 0 4xx, 11 5xx
"""


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 7102
    assert result.seconds == pytest.approx(1.09778)
    assert result.rps == pytest.approx(7102 / 1.09778)
    assert (result.p50_ms, result.p99_ms, result.p999_ms) == (1.333, 2.485, 2.799)
    assert result.errors == 3
    assert result.error_detail == {"read": 2, "status": 1}


def test_parse_h2load_with_log_latencies() -> None:
    latencies = [float(i) for i in range(1, 1001)]  # 1..1000 µs
    result = parse_h2load(H2LOAD_OUTPUT, latencies)
    assert result.requests == 130001
    assert result.seconds == 1.0
    assert result.errors == 11
    assert result.error_detail == {"failed": 11, "5xx": 11}
    assert result.p50_ms == pytest.approx(0.5)
    assert result.p99_ms == pytest.approx(0.99)
    assert result.p999_ms == pytest.approx(0.999)


def test_percentile_nearest_rank() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([5.0], 99.9) == 5.0


def test_wrk_script_spreads_paths_and_reports() -> None:
    script = wrk_script(path="/", headers={"Host": "upstream.local"}, spread_paths=["/a", "/b"])
    assert 'wrk.headers["Host"] = "upstream.local"' in script
    assert '"/a",' in script
    assert "request = function()" in script
    assert "latency:percentile(99.9)" in script


def test_proc_readers_on_this_process() -> None:
    times = procs.cpu_times(os.getpid())
    assert times.total >= 0
    assert times.threads >= 1
    mem = procs.memory(os.getpid())
    assert mem.rss_kib > 0
    assert mem.hwm_kib >= mem.rss_kib
    check = procs.quiet_check([0], threshold=100.0, sample_s=0.05, retries=0)
    assert check.quiet
    assert 0 in check.busy_percent


def test_scenarios_compile_for_every_proxy() -> None:
    assert list(SCENARIOS) == [
        "h1-keepalive",
        "h2-multiplexed",
        "connection-churn",
        "large-body",
        "route-table-1000",
        "same-core-latency",
        "breaker",
        "python-filter",
    ]
    for scenario in SCENARIOS.values():
        if scenario.failing_endpoint:
            continue  # test_breaker_scenario
        snapshot = compile_snapshot(config_yaml(scenario, "127.0.0.1:9"), "127.0.0.1:1", "x")
        routes = snapshot.route_tables[0].virtual_hosts[0].routes
        assert len(routes) == (scenario.routes or 1)
        if scenario.routes:
            assert scenario.probe_path == route_paths(1)[0]
            with pytest.raises(Unsupported, match="Host → backend"):
                haproxy_config(snapshot, bind="127.0.0.1:2")
        else:
            text = haproxy_config(snapshot, bind="127.0.0.1:2", h2_bind="127.0.0.1:3")
            assert "bind 127.0.0.1:3 proto h2" in text
            assert "req.hdr(host) -i upstream.local:80 upstream.local" in text
            assert "server s0 127.0.0.1:9 weight 1" in text
            assert "nbthread 1" in text


def test_breaker_scenario() -> None:
    """Two endpoints (the failing one too), limits that do not trip and outlier detection, in
    meshfast's IR and Envoy's bootstrap alike; HAProxy refuses what it cannot say."""
    scenario = SCENARIOS["breaker"]
    text = config_yaml(scenario, "127.0.0.1:9", failing="127.0.0.1:10")
    snapshot = compile_snapshot(text, "127.0.0.1:1", "x")
    (cluster,) = snapshot.clusters
    assert sorted(e.address for e in cluster.endpoints) == ["127.0.0.1:10", "127.0.0.1:9"]
    assert cluster.outlier is not None
    assert (cluster.outlier.consecutive_5xx, cluster.outlier.base_ejection_ms) == (3, 30_000)
    assert cluster.limits is not None
    assert cluster.limits.max_connections == 1000
    envoy = bootstrap(snapshot, admin_port=1)
    (exported,) = envoy["static_resources"]["clusters"]
    od = exported["outlier_detection"]
    assert (od["consecutive_5xx"], od["enforcing_consecutive_5xx"]) == (3, 100)
    assert (od["interval"], od["base_ejection_time"], od["max_ejection_percent"]) == (
        "1s",
        "30s",
        50,
    )
    assert od["enforcing_success_rate"] == 0
    assert exported["circuit_breakers"]["thresholds"][0]["max_connections"] == 1000
    with pytest.raises(Unsupported, match="outlier, limits not translated"):
        haproxy_config(snapshot, bind="127.0.0.1:2")


def test_python_filter_scenario(tmp_path: Path) -> None:
    """h1-keepalive's load; meshfast three ways (no filter, a no-op, a header filter), each
    config compiling with its filter imported from the config's folder; Envoy and HAProxy
    skipped with the reason; direct kept."""
    scenario = SCENARIOS["python-filter"]
    base = SCENARIOS["h1-keepalive"]
    assert (scenario.tool, scenario.connections, scenario.path) == ("wrk", 50, "/")
    assert scenario.request_headers == base.request_headers
    assert [v.name for v in scenario.variants] == [
        "meshfast",
        "meshfast+noop-filter",
        "meshfast+header-filter",
        "meshfast+async-filter",
    ]
    assert set(scenario.skip) == {"envoy", "haproxy"}
    assert all("Python filters" in reason for reason in scenario.skip.values())
    todo = entries(scenario, peers.PROXIES, "127.0.0.1:9")
    assert [(e.name, e.kind) for e in todo] == [
        ("meshfast", "meshfast"),
        ("meshfast+noop-filter", "meshfast"),
        ("meshfast+header-filter", "meshfast"),
        ("meshfast+async-filter", "meshfast"),
        ("direct", "direct"),
    ]
    assert [e.name for e in entries(base, peers.PROXIES, "127.0.0.1:9")] == list(peers.PROXIES)
    assert all(e.name in peers.RECORD_PROXIES for e in todo)

    (tmp_path / f"{FILTER_MODULE_NAME}.py").write_text(FILTER_MODULE)
    filters: dict[str, list[HttpFilter]] = {}
    for entry in todo[:3]:
        path = tmp_path / f"{entry.name}.yaml"
        path.write_text(entry.yaml_text)
        config = deploy.load([path])  # (the filters built, as `meshfast run` loads them)
        snapshot = compile_config(config, CompileOptions(outbound="127.0.0.1:1", version=1))
        (route,) = snapshot.route_tables[0].virtual_hosts[0].routes
        assert len(route.action.filters) == (0 if entry.name == "meshfast" else 1), entry.name
        filters[entry.name] = list(config.filters.values())
    assert filters["meshfast"] == []
    (noop,) = filters["meshfast+noop-filter"]
    (header,) = filters["meshfast+header-filter"]
    assert type(noop).__name__ == "Noop"
    assert "on_request" in vars(type(noop))
    assert "on_response" not in vars(type(noop))
    assert "on_log" not in vars(type(noop))
    assert {"on_request", "on_response"} <= set(vars(type(header)))


def test_filter_overheads_in_the_report() -> None:
    plain = report.aggregate("python-filter", "meshfast", 1, [_sample(cpu_us_per_req=10.0)])
    noop = report.aggregate(
        "python-filter", "meshfast+noop-filter", 1, [_sample(cpu_us_per_req=12.5)]
    )
    header = report.aggregate(
        "python-filter", "meshfast+header-filter", 1, [_sample(cpu_us_per_req=14.0, rps=800.0)]
    )
    direct = report.aggregate("python-filter", "direct", 1, [_sample(cpu_us_per_req=None)])
    records = sorted([direct, header, noop, plain], key=lambda r: peers.record_rank(r.proxy))
    assert [r.proxy for r in records] == [
        "meshfast",
        "meshfast+noop-filter",
        "meshfast+header-filter",
        "direct",
    ]
    rows = report.filter_overheads(records)
    assert [(r["proxy"], r["cpu_us_per_req"]) for r in rows] == [
        ("meshfast+noop-filter", 2.5),
        ("meshfast+header-filter", 4.0),
    ]
    assert rows[1]["rps_ratio"] == 0.8
    assert report.ratios(records) == []  # no Envoy or HAProxy in this scenario
    line = "python-filter: no-op filter: +2.5 µs/req; header filter: +4.0 µs/req"
    assert report.overhead_summary(rows) == [line]
    assert line in report.render_table(records, [])
    markdown = report.render_markdown({"filter_overhead": rows}, records, "plot.png")
    assert f"- **{line}**" in markdown
    assert "| python-filter | meshfast+header-filter - meshfast | +4.0 |" in markdown


def _sample(**overrides: Any) -> report.RunSample:
    values: dict[str, Any] = {
        "rps": 1000.0,
        "requests": 1000,
        "seconds": 1.0,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": 3.0,
        "p999_ms": 4.0,
        "errors": 0,
        "quiet": True,
        "busy_percent": {0: 1.0},
        "cpu_us_per_req": 20.0,
        "rss_idle_mib": 30.0,
        "rss_peak_mib": 35.0,
        "ready_ms": 100.0,
    }
    values.update(overrides)
    return report.RunSample(**values)


def test_aggregate_medians_spreads_and_ratios() -> None:
    mesh = report.aggregate(
        "s",
        "meshfast",
        1,
        [_sample(cpu_us_per_req=c, errors=1) for c in (10.0, 12.0, 30.0)],
    )
    assert mesh.cpu_us_per_req == 12.0
    assert mesh.spread["cpu_us_per_req"] == [10.0, 30.0]
    assert mesh.errors == 3
    assert mesh.runs == 3
    envoy = report.aggregate("s", "envoy", 1, [_sample(cpu_us_per_req=24.0, p99_ms=6.0)])
    direct = report.aggregate(
        "s", "direct", 1, [_sample(cpu_us_per_req=None, p50_ms=0.5, p99_ms=1.0)]
    )
    assert direct.cpu_us_per_req is None
    records = [mesh, envoy, direct]
    report.fill_added_latency(records)
    assert mesh.added_p50_ms == 0.5
    assert envoy.added_p99_ms == 5.0
    (row,) = report.ratios(records)
    assert row["vs"] == "envoy"
    assert row["cpu_us_per_req"] == 0.5
    assert row["p99_ms"] == 0.5
    table = report.render_table(records, [row])
    assert "meshfast/envoy" in table
    assert "0.50x" in table
    results = {"machine": {}, "versions": {"envoy": "1.40.0"}, "ratios": [row], "commit": "abc"}
    markdown = report.render_markdown(results, records, "plot.png")
    assert "![CPU-µs per request and p99 per scenario](plot.png)" in markdown
    assert "`abc`" in markdown
    assert "envoy 1.40.0" in markdown


def test_haproxy_refuses_tls() -> None:
    """TLS termination or passthrough is work HAProxy's generated config would not do."""
    base = compile_snapshot(
        config_yaml(SCENARIOS["h1-keepalive"], "127.0.0.1:9"), "127.0.0.1:1", "x"
    )
    (http,) = base.listeners
    tls = ir.TlsServer(cert_chain="c.pem", private_key="k.pem")
    terminating = msgspec.structs.replace(base, listeners=(msgspec.structs.replace(http, tls=tls),))
    with pytest.raises(Unsupported, match="terminates TLS"):
        haproxy_config(terminating, bind="127.0.0.1:2")
    passthrough = ir.Listener(name="outbound|tls|443", address="127.0.0.1:443", protocol="tls")
    with pytest.raises(Unsupported, match="no TCP or TLS passthrough listener"):
        haproxy_config(
            msgspec.structs.replace(base, listeners=(http, passthrough)), bind="127.0.0.1:2"
        )


def test_ready_reports_the_median_and_the_first_cold_start() -> None:
    runs = [_sample(ready_ms=110.0), _sample(ready_ms=50.0), _sample(ready_ms=52.0)]
    rec = report.aggregate("s", "meshfast", 1, runs)
    assert (rec.ready_ms, rec.ready_first_ms) == (52.0, 110.0)
    table = report.render_table([rec], {})
    assert "52 (110)" in table
    assert "ready ms (1st)" in table
