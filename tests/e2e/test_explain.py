"""`meshfast explain`: the route a request takes and why, offline on Bookinfo's own samples
and live against a running sidecar (endpoint health from its admin API)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from meshfast.config import CompileOptions
from meshfast.deploy import Sources, deploy
from meshfast.explain import Explanation, Request, explain, render

from ..samples import BOOKINFO_NETWORKING as SAMPLES
from .conftest import service_entry

VERSIONS = {
    "productpage": ["v1"],
    "details": ["v1", "v2"],
    "reviews": ["v1", "v2", "v3"],
    "ratings": ["v1", "v2", "v2-mysql", "v2-mysql-vm"],
}
JASON = {"end-user": "jason"}


def _services(tmp_path: Path) -> Path:
    docs = []
    for svc, versions in VERSIONS.items():
        eps = [(f"10.0.0.{i + 1}:9080", {"app": svc, "version": v}) for i, v in enumerate(versions)]
        docs.append(service_entry(svc, 9080, eps))
    path = tmp_path / "services.yaml"
    path.write_text("---\n".join(docs))
    return path


def _explain(tmp_path: Path, sample: str, service: str, headers: dict[str, str]) -> Explanation:
    files = [str(_services(tmp_path)), str(SAMPLES / sample)]
    if sample != "fault-injection-details-v1.yaml":  # it brings its own DestinationRule
        files.append(str(SAMPLES / "destination-rule-all.yaml"))
    deployment = deploy(Sources(tuple(files)), CompileOptions(namespace="default"))
    request = Request.parse(
        f"GET http://{service}:9080/", [f"{k}: {v}" for k, v in headers.items()]
    )
    return explain(deployment.snapshot, request, config=deployment.config)


# (sample, service, headers) -> (the rule taken, skipped rules, {subset: weight}, fault)
CASES = [
    ("virtual-service-all-v1.yaml", "productpage", {}, (0, [], {"v1": 100}, None)),
    ("virtual-service-all-v1.yaml", "reviews", {}, (0, [], {"v1": 100}, None)),
    ("virtual-service-all-v1.yaml", "ratings", {}, (0, [], {"v1": 100}, None)),
    ("virtual-service-all-v1.yaml", "details", {}, (0, [], {"v1": 100}, None)),
    ("virtual-service-reviews-v3.yaml", "reviews", {}, (0, [], {"v3": 100}, None)),
    ("virtual-service-details-v2.yaml", "details", {}, (0, [], {"v2": 100}, None)),
    ("virtual-service-ratings-db.yaml", "ratings", {}, (0, [], {"v2": 100}, None)),
    ("virtual-service-ratings-mysql.yaml", "ratings", {}, (0, [], {"v2-mysql": 100}, None)),
    (
        "virtual-service-ratings-mysql-vm.yaml",
        "ratings",
        {},
        (0, [], {"v2-mysql-vm": 100}, None),
    ),
    ("virtual-service-reviews-50-v3.yaml", "reviews", {}, (0, [], {"v1": 50, "v3": 50}, None)),
    ("virtual-service-reviews-80-20.yaml", "reviews", {}, (0, [], {"v1": 80, "v2": 20}, None)),
    ("virtual-service-reviews-90-10.yaml", "reviews", {}, (0, [], {"v1": 90, "v2": 10}, None)),
    ("virtual-service-reviews-v2-v3.yaml", "reviews", {}, (0, [], {"v2": 50, "v3": 50}, None)),
    ("virtual-service-reviews-jason-v2-v3.yaml", "reviews", JASON, (0, [], {"v2": 100}, None)),
    (
        "virtual-service-reviews-jason-v2-v3.yaml",
        "reviews",
        {},
        (1, ["headers[end-user]"], {"v3": 100}, None),
    ),
    (
        "virtual-service-reviews-jason-v2-v3.yaml",
        "reviews",
        {"end-user": "mike"},
        (1, ["headers[end-user]"], {"v3": 100}, None),
    ),
    ("virtual-service-reviews-test-v2.yaml", "reviews", JASON, (0, [], {"v2": 100}, None)),
    (
        "virtual-service-reviews-test-v2.yaml",
        "reviews",
        {},
        (1, ["headers[end-user]"], {"v1": 100}, None),
    ),
    (
        "virtual-service-ratings-test-abort.yaml",
        "ratings",
        JASON,
        (0, [], {"v1": 100}, {"abort": "500 for 100%"}),
    ),
    (
        "virtual-service-ratings-test-abort.yaml",
        "ratings",
        {},
        (1, ["headers[end-user]"], {"v1": 100}, None),
    ),
    (
        "virtual-service-ratings-test-delay.yaml",
        "ratings",
        JASON,
        (0, [], {"v1": 100}, {"delay": "7s for 100%"}),
    ),
    (
        "fault-injection-details-v1.yaml",
        "details",
        {},
        (0, [], {"v1": 100}, {"abort": "555 for 100%"}),
    ),
]


@pytest.mark.parametrize(("sample", "service", "headers", "want"), CASES)
def test_explain_on_the_bookinfo_samples(  # type: ignore[no-untyped-def]
    tmp_path, sample, service, headers, want
) -> None:
    rule, skipped, subsets, fault = want
    e = _explain(tmp_path, sample, service, headers)
    assert e.origin == f"VirtualService default/{service} http[{rule}]"
    assert [t["miss"] for t in e.tried if t["miss"] is not None] == skipped
    assert {c["subset"]: c["weight"] for c in e.clusters} == subsets
    assert e.route is not None
    assert e.route.get("fault") == fault
    for c in e.clusters:
        assert c["host"] == f"{service}.default.svc.cluster.local"
        assert c["port"] == 9080
        # The subset's endpoints: those with its version label.
        want_ep = [f"10.0.0.{VERSIONS[service].index(c['subset']) + 1}:9080"]
        assert [ep["address"] for ep in c["endpoints"]] == want_ep
    text = render(e)
    assert f"(from {e.origin})" in text
    for miss in skipped:
        assert f"its {miss} does not match" in text


def test_explain_says_why_nothing_matches(tmp_path: Path) -> None:
    e = _explain(tmp_path, "virtual-service-reviews-v3.yaml", "nosuch", {})
    assert (e.virtual_host, e.route) == (None, None)
    assert "no virtual host serves nosuch:9080 (404 NR)" in render(e)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshfast", "explain", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_explain_cli_offline_json_and_path_normalization(tmp_path: Path) -> None:
    sample = SAMPLES / "virtual-service-reviews-jason-v2-v3.yaml"
    rules = SAMPLES / "destination-rule-all.yaml"
    run = _cli(
        "-c", str(_services(tmp_path)), str(sample), str(rules),
        "--request", "GET http://reviews:9080/a/../b/%7Euser?x=1",
        "-H", "end-user: jason", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["path"] == "/b/~user"  # as the workers route it: dot segments, %7E decoded
    assert out["origin"] == "VirtualService default/reviews http[0]"
    assert [c["subset"] for c in out["clusters"]] == ["v2"]
    assert out["live"] is False
    # No route: exit 3, said in text.
    run = _cli("-c", str(sample), "--request", "GET http://other/")
    assert run.returncode == 3
    assert "404 NR" in run.stdout
    # A bad request line is a usage error.
    assert _cli("-c", str(sample), "--request", "GET /no-host").returncode == 2


def test_explain_live_shows_endpoint_state(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    v1, v2 = echo("reviews-v1"), echo("reviews-v2")
    mesh = "\n---\n".join(
        [
            service_entry(
                "reviews",
                9080,
                [(v1.address, {"version": "v1"}), (v2.address, {"version": "v2"})],
            ),
            (SAMPLES / "destination-rule-reviews.yaml").read_text(),
            (SAMPLES / "virtual-service-reviews-test-v2.yaml").read_text(),
        ]
    )
    car = sidecar(mesh)
    # Traffic first: the endpoint serving it shows it in its state.
    r = httpx.get(car.url, headers={"host": "reviews:9080", **JASON}, timeout=10)
    assert r.json()["name"] == "reviews-v2"
    admin = car.admin.removeprefix("http://")
    run = _cli("--admin", admin, "--request", "GET http://reviews:9080/", "-H", "end-user: jason")
    assert run.returncode == 0, run.stderr
    assert "route     reviews.0" in run.stdout
    assert f"endpoint {v2.address} weight 1 HEALTHY, 0 in flight" in run.stdout
    assert v1.address not in run.stdout
    assert "offline" not in run.stdout
    out = json.loads(
        _cli("--admin", admin, "--request", "GET http://reviews:9080/", "--json").stdout
    )
    assert out["live"] is True
    assert [c["subset"] for c in out["clusters"]] == ["v1"]
    assert out["clusters"][0]["endpoints"][0]["health"] == "HEALTHY"
