"""Python filters through a real sidecar, part two: async phases on the Trio loop, time
budgets, body access with limits, the log phase of requests the core answered, and the
ext-auth and JWT-claim routing examples."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import httpx
import pytest

from meshfast.examples.filters.jwt_route import encode_hs256

from .conftest import service_entry

FILTERS = '''
import json
import time

import trio

from meshfast.filters import HttpFilter, Response

released = trio.Event()


class Gate(HttpFilter):
    """/wait waits (on Trio) until a later request to /release arrives."""

    async def on_request(self, request):
        if request.path == "/release":
            released.set()
        elif request.path == "/wait":
            await released.wait()
        request.headers["x-gate"] = "passed"
        return None

    async def on_response(self, request, response):
        await trio.sleep(0)
        response.headers["x-gate-response"] = request.path


class Hangs(HttpFilter):
    async def on_request(self, request):
        await trio.sleep_forever()


class Slow(HttpFilter):
    def on_request(self, request):
        time.sleep(0.3)  # a sync phase that overruns a 100ms budget
        return None


class Bodies(HttpFilter):
    request_body_limit = 1024
    response_body_limit = 4096

    def on_request(self, request):
        request.headers["x-seen-body"] = str(len(request.body))
        if request.body.startswith(b"upper:"):
            request.body = request.body.upper() + b"!"
        return None

    def on_response(self, request, response):
        data = json.loads(response.body)
        data["filtered"] = True
        response.body = json.dumps(data).encode()


class MoveHost(HttpFilter):
    """Sends /to-b to b.example.com by setting Host, as a rewrite filter would."""

    def on_request(self, request):
        if request.path == "/to-b":
            request.headers["host"] = "b.example.com"
        return None


class Ending(HttpFilter):
    def on_log(self, request, response, info):
        with open(self.config["path"], "a") as f:
            f.write(f"{request.path} {response.status} {info.flags}\\n")
'''


def filter_doc(name: str, target: str, extra: str = "") -> str:
    return f"""---
apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata: {{name: {name}}}
spec:
  python: "{target}"
{extra}"""


@pytest.fixture
def module(tmp_path: Path) -> Path:
    (tmp_path / "asyncfilters.py").write_text(FILTERS)
    return tmp_path


def get(car, host: str, path: str = "/", **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"host": host, **kw.pop("headers", {})}
    return httpx.get(f"{car.url}{path}", headers=headers, timeout=30, **kw)


def test_async_phases_never_block_the_worker(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    config = service_entry("a.example.com", 80, [(up.address, {})]) + filter_doc(
        "gate", "asyncfilters:Gate", "  timeout: 20s\n"
    )
    # One worker: /wait can only pass if that worker serves /release meanwhile.
    car = sidecar(config, workers=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(get, car, "a.example.com", "/wait")
        # /release goes only once /wait is in flight (parked in its filter).
        deadline = time.monotonic() + 30
        while car.stats()["listeners"]["outbound"]["rq_active"] < 1:
            assert time.monotonic() < deadline, "/wait never arrived"
            time.sleep(0.01)
        released = get(car, "a.example.com", "/release")
        r = waiting.result(timeout=60)
    for resp, path in ((r, "/wait"), (released, "/release")):
        assert resp.status_code == 200, resp.text
        assert resp.json()["headers"]["x-gate"] == "passed"
        assert resp.headers["x-gate-response"] == path


def test_time_budgets_async_cancelled_sync_failed(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    a, b, c = echo("a"), echo("b"), echo("c")
    config = (
        service_entry("a.example.com", 80, [(a.address, {})])
        + "---\n"
        + service_entry("b.example.com", 80, [(b.address, {})])
        + "---\n"
        + service_entry("c.example.com", 80, [(c.address, {})])
        + filter_doc(
            "hangs",
            "asyncfilters:Hangs",
            "  hosts: [a.example.com]\n  timeout: 200ms\n  failureStatus: 504\n",
        )
        + filter_doc("slow", "asyncfilters:Slow", "  hosts: [b.example.com]\n  timeout: 100ms\n")
    )
    car = sidecar(config)
    r = get(car, "a.example.com")
    assert (r.status_code, r.headers["x-meshfast-flags"], r.text) == (504, "FF", "filter timeout\n")
    r = get(car, "b.example.com")
    assert (r.status_code, r.headers["x-meshfast-flags"], r.text) == (500, "FF", "filter timeout\n")
    assert get(car, "c.example.com").status_code == 200
    assert car.stats()["filters"] == {
        "default/hangs": {"errors": 0, "timeouts": 1},
        "default/slow": {"errors": 0, "timeouts": 1},
    }
    prom = httpx.get(f"{car.admin}/stats/prometheus").text
    assert 'meshfast_filter_timeouts_total{filter="default/hangs"} 1' in prom


def test_body_access_with_limits(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    config = service_entry("a.example.com", 80, [(up.address, {})]) + filter_doc(
        "bodies", "asyncfilters:Bodies"
    )
    car = sidecar(config)
    url = f"{car.url}/post"
    host = {"host": "a.example.com"}
    r = httpx.post(url, headers=host, content=b"upper:hello", timeout=30)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["headers"]["x-seen-body"] == "11"
    # The replaced body went upstream with its own length.
    assert seen["headers"]["content-length"] == str(len(b"UPPER:HELLO!"))
    # The response body was read, changed and sent with a matching length.
    assert seen["filtered"] is True
    assert r.headers["content-length"] == str(len(r.content))
    # Chunked uploads are read whole too.
    r = httpx.post(url, headers=host, content=iter([b"abc", b"def"]), timeout=30)
    assert r.json()["headers"]["x-seen-body"] == "6"
    # Past the filters' limit: 413, by declared length or by counting a chunked body.
    assert httpx.post(url, headers=host, content=b"x" * 2000, timeout=30).status_code == 413
    chunks = iter([b"x" * 1000, b"x" * 1000])
    assert httpx.post(url, headers=host, content=chunks, timeout=30).status_code == 413
    # A response past the limit is not passed on half-read: 500.
    big = get(car, "a.example.com", headers={"x-echo-body-bytes": "100000"})
    assert (big.status_code, big.text) == (500, "response payload too large\n")
    # And the sidecar goes on serving.
    assert httpx.post(url, headers=host, content=b"ok", timeout=30).status_code == 200


def test_on_log_hears_how_the_core_answered(echo, sidecar, module: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dead = echo("dead")
    address = dead.address
    dead.stop()  # nothing listens there any more: connect failure
    path = tmp_path / "endings.log"
    config = service_entry("dead.example.com", 80, [(address, {})]) + filter_doc(
        "ending", "asyncfilters:Ending", f"  config: {{path: {json.dumps(str(path))}}}\n"
    )
    car = sidecar(config)
    r = get(car, "dead.example.com", "/gone")
    assert r.status_code == 503
    flags = r.headers["x-meshfast-flags"]
    assert flags in ("UF", "UH")
    assert path.read_text() == f"/gone 503 {flags}\n"


def test_ext_auth_example(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    a, b = echo("a"), echo("b")
    allow, deny = echo("auth-ok"), echo("auth-no", status=403)
    example = "meshfast.examples.filters.ext_auth:ExtAuth"
    config = (
        service_entry("a.example.com", 80, [(a.address, {})])
        + "---\n"
        + service_entry("b.example.com", 80, [(b.address, {})])
        + filter_doc(
            "auth-a",
            example,
            f"  hosts: [a.example.com]\n  config: {{url: 'http://{allow.address}/check'}}\n",
        )
        + filter_doc(
            "auth-b",
            example,
            f"  hosts: [b.example.com]\n  config: {{url: 'http://{deny.address}/check'}}\n",
        )
    )
    car = sidecar(config)
    ok = get(car, "a.example.com", "/x?y=1", headers={"authorization": "Bearer t"})
    assert ok.status_code == 200
    assert ok.json()["name"] == "a"
    no = get(car, "b.example.com", "/x?y=1", headers={"authorization": "Bearer t"})
    assert no.status_code == 403
    # The auth service's own answer comes back: it saw the request and the forwarded header.
    asked = no.json()
    assert asked["name"] == "auth-no"
    assert asked["path"] == "/check"
    assert asked["headers"]["x-original-uri"] == "/x?y=1"
    assert asked["headers"]["x-original-method"] == "GET"
    assert asked["headers"]["authorization"] == "Bearer t"


def test_jwt_claim_routing_example(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    v1, v2 = echo("v1"), echo("v2")
    config = (
        service_entry(
            "reviews", 9080, [(v1.address, {"version": "v1"}), (v2.address, {"version": "v2"})]
        )
        + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: beta
    match: [{headers: {x-jwt-group: {exact: beta}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: default
    route: [{destination: {host: reviews, subset: v1}}]
"""
        + filter_doc(
            "jwt",
            "meshfast.examples.filters.jwt_route:JwtClaims",
            "  hosts: [reviews]\n"
            "  config: {secret: s3cret, issuer: me, claims: {group: x-jwt-group}}\n",
        )
    )
    car = sidecar(config)

    def who(token: str | None, **extra: str) -> httpx.Response:
        headers = dict(extra)
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return get(car, "reviews:9080", headers=headers)

    beta = encode_hs256({"iss": "me", "group": "beta"}, "s3cret")
    alpha = encode_hs256({"iss": "me", "group": "alpha"}, "s3cret")
    r = who(beta)
    assert r.json()["name"] == "v2"
    assert r.json()["headers"]["x-jwt-group"] == "beta"
    assert who(alpha).json()["name"] == "v1"
    assert who(None).json()["name"] == "v1"
    # A client cannot route itself by sending the header.
    assert who(None, **{"x-jwt-group": "beta"}).json()["name"] == "v1"
    forged = encode_hs256({"iss": "me", "group": "beta"}, "wrong")
    r = who(forged)
    assert r.status_code == 401
    assert "bad signature" in r.text
    assert who(encode_hs256({"iss": "other", "group": "beta"}, "s3cret")).status_code == 401


def test_a_filter_that_sets_host_moves_the_request(echo, sidecar, module: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = echo("a"), echo("b")
    config = (
        service_entry("a.example.com", 80, [(a.address, {})])
        + "---\n"
        + service_entry("b.example.com", 80, [(b.address, {})])
        + filter_doc("move", "asyncfilters:MoveHost", "  hosts: [a.example.com]\n")
    )
    car = sidecar(config)
    stay = get(car, "a.example.com", "/stay")
    assert (stay.json()["name"], stay.json()["headers"]["host"]) == ("a", "a.example.com")
    moved = get(car, "a.example.com", "/to-b")
    assert (moved.json()["name"], moved.json()["headers"]["host"]) == ("b", "b.example.com")
