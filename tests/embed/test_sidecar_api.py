"""``meshfast.Sidecar``: a sidecar served in the test's own Trio run, real sockets, real clients.

Requests go through ``httpx.AsyncClient``: the filters run on the core's worker threads and
take the GIL, so the Trio thread must never block on a request to its own sidecar.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel

import meshfast
from meshfast.config import ConfigError
from meshfast.filters import HttpFilter, Request, Response

from ..e2e.conftest import service_entry
from ..samples import BAD_WEIGHT_YAML, YAML_TYPE
from .conftest import Echo

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embed" / "embed_demo.py"

A, B = "a.example.com", "b.example.com"


def mesh(echo: Echo) -> str:
    """Two services, a and b, each with one echo endpoint."""
    return (
        service_entry(A, 80, [(echo("a").address, {})])
        + "---\n"
        + service_entry(B, 80, [(echo("b").address, {})])
    )


FILE_FILTER = """---
apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata: {name: tag}
spec:
  python: meshfast.examples.filters.add_header:AddHeader
  config: {request: {x-from-file: "yes"}}
"""


class Tag(HttpFilter):
    """Sets ``x-tag`` on the request (seen by the upstream) and on the response."""

    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def on_request(self, request: Request) -> Response | None:
        request.headers["x-tag"] = self.value
        return None

    def on_response(self, request: Request, response: Response) -> None:
        response.headers["x-tag"] = self.value


class Deny(HttpFilter):
    """Answers ``/deny`` locally with 403."""

    def on_request(self, request: Request) -> Response | None:
        if request.path == "/deny":
            return Response(403, {"x-denied": "yes"}, b"denied here")
        return None


class Boom(HttpFilter):
    def on_request(self, request: Request) -> Response | None:
        raise RuntimeError("a bug in a filter")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


async def get(
    client: httpx.AsyncClient, car: meshfast.Sidecar, host: str, path: str = "/"
) -> httpx.Response:
    return await client.get(f"{car.url}{path}", headers={"host": host})


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return headers


# === life cycle ===


async def test_async_with_serves_on_free_ports_then_stops(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo))
    assert car.state == "new"
    with pytest.raises(RuntimeError, match="has not started"):
        _ = car.url
    async with car as same:
        assert same is car
        assert car.state == "running"
        assert not car.outbound.endswith(":0")
        assert not car.admin.endswith(":0")
        assert car.url == f"http://{car.outbound}"
        assert car.listeners == {"outbound": car.outbound}
        assert car.version == 1
        r = await get(client, car, A, "/hello")
        assert (r.status_code, r.json()["name"], r.json()["path"]) == (200, "a", "/hello")
        ready = await client.get(f"{car.admin_url}/ready")
        assert (ready.status_code, ready.text) == (200, "ready")
        stats = car.stats()
        assert stats["listeners"]["outbound"]["rq_total"] >= 1
        assert "filters" not in stats
    assert car.state == "stopped"
    with pytest.raises(httpx.ConnectError):
        await get(client, car, A)


async def test_nursery_start_serve_and_stop(echo: Echo, client: httpx.AsyncClient) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo))
    async with trio.open_nursery() as nursery:
        ready = await nursery.start(car.serve)
        assert (ready.outbound, ready.admin, ready.version) == (car.outbound, car.admin, 1)
        assert (await get(client, car, B)).json()["name"] == "b"
        await car.stop()
        assert car.state == "stopped"
        await car.stop()  # idempotent
    with pytest.raises(RuntimeError, match="serves only once"):
        await car.serve()


async def test_an_error_in_the_body_comes_out_as_itself(echo: Echo) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo))
    with pytest.raises(KeyError, match="mine"):
        async with car:
            raise KeyError("mine")
    assert car.state == "stopped"


async def test_a_taken_address_fails_the_start(echo: Echo) -> None:
    async with meshfast.Sidecar(yaml=mesh(echo)) as first:
        second = meshfast.Sidecar(yaml=mesh(echo), admin=first.admin)
        with pytest.raises(OSError, match="admin address"):
            async with second:
                pass
        assert second.state == "stopped"


async def test_cancelled_from_outside_it_stops(echo: Echo) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo))
    with trio.move_on_after(0.2) as scope:
        async with car:
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert car.state == "stopped"


async def test_changes_while_starting_wait_for_the_start(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(car.serve)
        while car.state == "new":  # until serve() has run up to its first thread
            await trio.lowlevel.checkpoint()
        assert car.state == "starting"  # compiling in a thread: many checkpoints to go
        await car.add_filter(Tag("early"))  # applied after the start's own config
        assert (car.state, car.version) == ("running", 2)
        assert upstream_headers(await get(client, car, A))["x-tag"] == "early"
        await car.stop()
    with pytest.raises(RuntimeError, match="stopping"):
        await car.add_filter(Tag("late"))


async def test_app_is_served_on_the_inbound_listener(echo: Echo, client: httpx.AsyncClient) -> None:
    app = echo("app")
    async with meshfast.Sidecar(app=app.address) as car:
        await car.add_filter(Tag("in"))  # no hosts: inbound routes too
        inbound = car.listeners["inbound"]
        assert not inbound.endswith(":0")
        r = await client.get(f"http://{inbound}/x")
        assert (r.json()["name"], r.json()["headers"]["x-tag"]) == ("app", "in")


def test_bad_arguments_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="outbound: expected HOST:PORT"):
        meshfast.Sidecar(outbound="localhost")
    with pytest.raises(ValueError, match="pass YAML text as yaml="):
        meshfast.Sidecar("apiVersion: v1\nkind: Service\n")


# === programmatic filters ===


async def test_filters_added_before_the_start_and_while_serving(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo))
    assert await car.add_filter(Tag("blue"), hosts=[A]) == "tag"
    async with car:
        assert car.version == 1
        r = await get(client, car, A)
        assert upstream_headers(r)["x-tag"] == "blue"
        assert r.headers["x-tag"] == "blue"
        assert "x-tag" not in upstream_headers(await get(client, car, B))  # out of scope

        # Live: applied as a new version before add_filter returns.
        deny = Deny()
        assert await car.add_filter(deny, hosts=B) == "deny"  # one host, as a str
        assert car.version == 2
        assert deny.name == "default/deny"
        r = await get(client, car, B, "/deny")
        assert (r.status_code, r.text, r.headers["x-denied"]) == (403, "denied here", "yes")
        assert (await get(client, car, B, "/other")).status_code == 200
        assert (await get(client, car, A, "/deny")).status_code == 200
        assert set(car.filters) == {"tag", "deny"}
        assert car.filters["deny"] is deny

        # Removed: the next version has no Deny.
        await car.remove_filter("deny")
        assert car.version == 3
        assert (await get(client, car, B, "/deny")).status_code == 200
        assert upstream_headers(await get(client, car, A))["x-tag"] == "blue"
        with pytest.raises(KeyError):
            await car.remove_filter("deny")
        assert car.version == 3


async def test_default_names_are_unique_and_explicit_clashes_are_refused(echo: Echo) -> None:
    car = meshfast.Sidecar(yaml=mesh(echo) + FILE_FILTER)
    # "tag" is the file's filter: the default name steps past it.
    assert await car.add_filter(Tag("x")) == "tag-2"
    assert await car.add_filter(Tag("y")) == "tag-3"
    with pytest.raises(ValueError, match="already attached"):
        await car.add_filter(Tag("z"), name="tag-2")
    one = Tag("w")
    await car.add_filter(one, name="mine")
    with pytest.raises(ValueError, match="already attached, as 'mine'"):
        await car.add_filter(one, name="again")
    with pytest.raises(ConfigError, match=r"<yaml>:\d+: HttpFilter/tag: \$\.metadata\.name"):
        await car.add_filter(Tag("z"), name="tag")
    assert set(car.filters) == {"tag-2", "tag-3", "mine"}
    with pytest.raises(TypeError, match="HttpFilter subclass"):
        await car.add_filter(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="failure_status"):
        await car.add_filter(Tag("v"), failure_status=200)
    with pytest.raises(ValueError, match="hosts"):
        await car.add_filter(Tag("v"), hosts=[""])


async def test_programmatic_filters_compile_like_file_declared_ones(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    """Same ids, scope, names and failure status in the IR as the same HttpFilter in YAML."""
    services = mesh(echo)
    declared = services + FILE_FILTER.replace(
        "  config:", "  hosts: [a.example.com]\n  failureStatus: 503\n  config:"
    )
    async with meshfast.Sidecar(yaml=declared) as car:
        from_file = _filter_refs((await client.get(f"{car.admin_url}/config_dump")).json())
    async with meshfast.Sidecar(yaml=services) as car:
        await car.add_filter(Tag("t"), hosts=[A], failure_status=503, name="tag")
        added = _filter_refs((await client.get(f"{car.admin_url}/config_dump")).json())
    assert added == from_file
    assert from_file == {"a.example.com:80": [(0, "default/tag", 503)], "b.example.com:80": []}


def _filter_refs(dump: dict[str, Any]) -> dict[str, list[tuple[int, str, int]]]:
    """The filters of each virtual host's routes in a ``/config_dump``."""
    return {
        vh["name"]: [
            (f["id"], f["name"], f["failure_status"])
            for rt in vh["routes"]
            for f in rt["action"]["filters"]
        ]
        for table in dump["snapshot"]["route_tables"]
        for vh in table["virtual_hosts"]
    }


async def test_route_scope(echo: Echo, client: httpx.AsyncClient) -> None:
    vs = f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a}}
spec:
  hosts: [{A}]
  http:
  - name: special
    match: [{{uri: {{prefix: /special}}}}]
    route: [{{destination: {{host: {A}}}}}]
  - name: rest
    route: [{{destination: {{host: {A}}}}}]
"""
    async with meshfast.Sidecar(yaml=mesh(echo) + vs) as car:
        await car.add_filter(Tag("special"), route="special")
        assert upstream_headers(await get(client, car, A, "/special/x"))["x-tag"] == "special"
        assert "x-tag" not in upstream_headers(await get(client, car, A, "/other"))


async def test_a_raising_filter_answers_its_failure_status_and_is_counted(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    async with meshfast.Sidecar(yaml=mesh(echo), workers=2) as car:
        await car.add_filter(Boom(), hosts=[A])
        for _ in range(10):
            r = await get(client, car, A)
            assert (r.status_code, r.headers["x-meshfast-flags"]) == (500, "FF")
        # Other routes, and the worker threads, are unaffected.
        for _ in range(10):
            assert (await get(client, car, B)).status_code == 200
        stats = car.stats()
        assert stats["filters"] == {"default/boom": {"errors": 10, "timeouts": 0}}
        assert stats["listeners"]["outbound"]["response_flags"]["FF"] == 10
        admin = (await client.get(f"{car.admin_url}/stats")).json()
        assert admin["filters"] == stats["filters"]


async def test_async_filters_run_on_the_callers_trio_loop(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    """An async phase may use what the embedding program owns on its own Trio loop."""
    allowed = {"alice"}
    loops: list[object] = []

    class Allow(HttpFilter):
        async def on_request(self, request: Request) -> Response | None:
            loops.append(trio.lowlevel.current_trio_token())
            await trio.lowlevel.checkpoint()
            if request.headers.get("x-user") not in allowed:
                return Response(403, body="not allowed\n")
            return None

    class Hangs(HttpFilter):
        async def on_request(self, request: Request) -> Response | None:
            await trio.sleep_forever()
            return None

    async with meshfast.Sidecar(yaml=mesh(echo)) as car:
        await car.add_filter(Allow(), hosts=[A])
        await car.add_filter(Hangs(), hosts=[B], failure_status=504, phase_timeout=0.05)
        ok = await client.get(f"{car.url}/", headers={"host": A, "x-user": "alice"})
        assert ok.status_code == 200
        no = await client.get(f"{car.url}/", headers={"host": A, "x-user": "mallory"})
        assert (no.status_code, no.text) == (403, "not allowed\n")
        allowed.add("mallory")  # state shared with the program, no reload needed
        again = await client.get(f"{car.url}/", headers={"host": A, "x-user": "mallory"})
        assert again.status_code == 200
        slow = await get(client, car, B)
        assert (slow.status_code, slow.headers["x-meshfast-flags"]) == (504, "FF")
        assert car.stats()["filters"] == {"default/hangs": {"errors": 0, "timeouts": 1}}
    assert loops == [trio.lowlevel.current_trio_token()] * 3


# === reload ===


async def test_reload_and_post_config_keep_programmatic_filters(
    echo: Echo, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    first = tmp_path / "first.yaml"
    first.write_text(service_entry(A, 80, [(echo("a").address, {})]))
    async with meshfast.Sidecar(first) as car:
        assert car.sources == (str(first),)
        await car.add_filter(Tag("kept"))
        assert car.version == 2
        assert (await get(client, car, B)).status_code == 404  # no b yet

        # New YAML text: b appears, the filter stays (on every host: no scope).
        assert await car.reload(yaml=mesh(echo)) == 3
        assert car.sources == ("<yaml>",)
        assert upstream_headers(await get(client, car, B))["x-tag"] == "kept"

        # The files again (no arguments: the last sources).
        assert await car.reload(first) == 4
        assert (await get(client, car, B)).status_code == 404
        assert await car.reload() == 5
        assert upstream_headers(await get(client, car, A))["x-tag"] == "kept"

        # POST /config on the admin API goes through the same path.
        r = await client.post(f"{car.admin_url}/config", headers=YAML_TYPE, content=mesh(echo))
        assert r.status_code == 200, r.text
        assert (car.version, car.sources) == (6, ("<POST /config>",))
        assert upstream_headers(await get(client, car, B))["x-tag"] == "kept"


async def test_a_bad_reload_raises_and_keeps_serving(echo: Echo, client: httpx.AsyncClient) -> None:
    async with meshfast.Sidecar(yaml=mesh(echo)) as car:
        await car.add_filter(Tag("t"))
        bad = mesh(echo) + "---\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: 3}\n"
        with pytest.raises(ConfigError, match=r"<yaml>:\d+: VirtualService/x: \$\.spec\.hosts"):
            await car.reload(yaml=bad)
        # A config that declares the name of a programmatic filter: refused, at its line.
        clash = mesh(echo) + FILE_FILTER
        with pytest.raises(ConfigError) as info:
            await car.reload(yaml=clash)
        line = clash.splitlines().index("metadata: {name: tag}") + 1
        assert [str(p) for p in info.value.problems] == [
            f"<yaml>:{line}: HttpFilter/tag: $.metadata.name: duplicate HttpFilter"
            " default/tag: add_filter has it"
        ]
        assert car.version == 2
        assert upstream_headers(await get(client, car, A))["x-tag"] == "t"
        # Files and text together, and the old ones kept after a failed reload.
        assert await car.reload() == 3


# === config errors ===


def test_a_broken_config_raises_at_construction_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD_WEIGHT_YAML)
    with pytest.raises(ConfigError) as info:
        meshfast.Sidecar(path)
    assert any(
        str(p).startswith(f"{path}:11: VirtualService/reviews: ") for p in info.value.problems
    )
    with pytest.raises(ConfigError, match=r"<yaml>:11: VirtualService/reviews: "):
        meshfast.Sidecar(yaml=BAD_WEIGHT_YAML)
    good, missing = tmp_path / "good.yaml", tmp_path / "missing.yaml"
    good.write_text(service_entry(A, 80, [("127.0.0.1:1", {})]))
    with pytest.raises(ConfigError, match=re.escape(f"{missing}:1: -/-: $: no such file")):
        meshfast.Sidecar([good, missing])


def test_files_and_text_are_one_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service_entry(A, 80, [("127.0.0.1:1", {})]))
    # The text repeats the file's ServiceEntry: a duplicate across the two, with both places.
    with pytest.raises(
        ConfigError, match=r"<yaml>:\d+: ServiceEntry/a: .*first defined at .*a\.yaml"
    ):
        meshfast.Sidecar(tmp_path, yaml=service_entry(A, 80, [("127.0.0.1:1", {})]))


# === several sidecars ===


async def test_two_sidecars_in_one_process(echo: Echo, client: httpx.AsyncClient) -> None:
    config = mesh(echo)
    async with meshfast.Sidecar(yaml=config) as one, meshfast.Sidecar(yaml=config) as two:
        assert one.outbound != two.outbound
        assert one.admin != two.admin
        await one.add_filter(Tag("one"))
        await two.add_filter(Tag("two"))
        a1, a2 = await get(client, one, A), await get(client, two, A)
        assert (upstream_headers(a1)["x-tag"], upstream_headers(a2)["x-tag"]) == ("one", "two")
        await one.stop()
        assert two.state == "running"
        assert upstream_headers(await get(client, two, B))["x-tag"] == "two"


# === package surface and the example ===


def test_import_meshfast_stays_cheap_and_sidecar_is_lazy() -> None:
    code = (
        "import sys, meshfast; "
        "heavy = {'trio', 'meshfast._core', 'meshfast.embed'} & set(sys.modules); "
        "assert not heavy, heavy; "
        "from meshfast import Sidecar; "
        "from meshfast.embed import Sidecar as S; assert Sidecar is S; "
        "assert '_core' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


async def test_the_embedding_example() -> None:
    from meshfast.examples.embed.embed_demo import run

    lines = await run()
    assert lines == [
        "GET / without end-user -> 401 who are you?",
        "GET / as jason -> 200 from reviews-v1, x-stamp seen upstream: embedded",
        "after remove_filter: GET / without end-user -> 200",
    ]


def test_the_embedding_example_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True, timeout=120
    )
    assert "as jason -> 200" in out.stdout
