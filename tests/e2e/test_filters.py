"""Python HttpFilters through a real sidecar: both actions, both phases, shared
state, containment, scoping, reload, and the shipped examples."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from ..samples import YAML_TYPE
from .conftest import service_entry

EXAMPLES = Path(__file__).resolve().parents[2] / "python" / "meshfast" / "examples" / "filters"

FILTERS = """
from meshfast.filters import HttpFilter, Response


class Tag(HttpFilter):
    def on_request(self, request):
        request.state["seen"] = request.path
        request.headers["x-tagged"] = self.config.get("tag", "none")
        if request.path == "/deny":
            return Response(403, headers={"x-denied": "yes"}, body=b"denied by filter")
        return None

    def on_response(self, request, response):
        response.headers["x-state"] = request.state["seen"]
        response.headers["x-route"] = request.route


class Boom(HttpFilter):
    def on_request(self, request):
        raise RuntimeError("a bug in a filter")
"""


def mesh(echo, filters: str) -> str:  # type: ignore[no-untyped-def]
    a, b = echo("a"), echo("b")
    return (
        service_entry("a.example.com", 80, [(a.address, {})])
        + "---\n"
        + service_entry("b.example.com", 80, [(b.address, {})])
        + filters
    )


def filter_doc(name: str, cls: str, extra: str = "") -> str:
    return f"""---
apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata: {{name: {name}}}
spec:
  python: "myfilters:{cls}"
{extra}"""


@pytest.fixture
def module(tmp_path: Path) -> Path:
    # The filter module lives next to the config file that names it.
    (tmp_path / "myfilters.py").write_text(FILTERS)
    return tmp_path


def get(car, host: str, path: str = "/") -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(f"{car.url}{path}", headers={"host": host}, timeout=30)


def test_continue_respond_state_and_scope(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(
        mesh(echo, filter_doc("tag", "Tag", "  hosts: [a.example.com]\n  config: {tag: blue}\n"))
    )
    r = get(car, "a.example.com", "/hello")
    assert r.status_code == 200
    assert r.json()["headers"]["x-tagged"] == "blue"
    assert r.headers["x-state"] == "/hello"
    assert r.headers["x-route"].startswith("a.example.com:80/")
    denied = get(car, "a.example.com", "/deny")
    assert (denied.status_code, denied.text, denied.headers["x-denied"]) == (
        403,
        "denied by filter",
        "yes",
    )
    # Out of scope: b.example.com has no filter.
    other = get(car, "b.example.com", "/deny")
    assert other.status_code == 200
    assert "x-tagged" not in other.json()["headers"]


def test_a_raising_filter_is_contained(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(
        mesh(echo, filter_doc("boom", "Boom", "  hosts: [a.example.com]\n  failureStatus: 503\n"))
    )
    for _ in range(20):
        r = get(car, "a.example.com")
        assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "FF")
    # Routes without the filter, and the worker threads, are unaffected.
    assert all(get(car, "b.example.com").status_code == 200 for _ in range(20))
    stats = car.stats()
    assert stats["listeners"]["outbound"]["response_flags"]["FF"] == 20
    # A counter per filter, in /stats and /stats/prometheus.
    assert stats["filters"] == {"default/boom": {"errors": 20, "timeouts": 0}}
    prom = httpx.get(f"{car.admin}/stats/prometheus").text
    assert 'meshfast_filter_errors_total{filter="default/boom"} 20' in prom
    # Counters survive a reload that keeps the filter.
    config = car.config_path.read_text()
    assert httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=config).status_code == 200
    assert get(car, "a.example.com").headers["x-meshfast-flags"] == "FF"
    assert car.stats()["filters"] == {"default/boom": {"errors": 21, "timeouts": 0}}


def test_filters_reload_with_config(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    config = mesh(echo, filter_doc("tag", "Tag", "  config: {tag: one}\n"))
    car = sidecar(config)
    assert get(car, "a.example.com").json()["headers"]["x-tagged"] == "one"
    r = httpx.post(
        f"{car.admin}/config", headers=YAML_TYPE, content=config.replace("tag: one", "tag: two")
    )
    # From POST /config the module is found on the path the first load added.
    assert r.status_code == 200, r.text
    assert get(car, "a.example.com").json()["headers"]["x-tagged"] == "two"
    without = config.split("---\napiVersion: meshfast.io/v1alpha1")[0]
    assert httpx.post(f"{car.admin}/config", headers=YAML_TYPE, content=without).status_code == 200
    assert "x-tagged" not in get(car, "a.example.com").json()["headers"]


def test_shipped_examples_header_injection_and_rate_limit(echo, sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for f in EXAMPLES.glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    up = echo("reviews")
    config = (
        service_entry("reviews", 9080, [(up.address, {})])
        + "---\n"
        + (EXAMPLES / "filters.yaml")
        .read_text()
        .replace("rate: 10, burst: 20", "rate: 0.001, burst: 5")
    )
    car = sidecar(config)
    statuses = []
    for _ in range(8):
        r = get(car, "reviews:9080")
        statuses.append(r.status_code)
        if r.status_code == 200:
            assert r.json()["headers"]["x-tenant"] == "blue"
            assert r.headers["x-served-by"] == "meshfast"
    assert statuses == [200] * 5 + [429] * 3
