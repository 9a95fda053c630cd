"""The admin API over real sockets, with a fake core standing in for ``meshfast._core.Core``."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import msgspec
import pytest
import trio

from meshfast.config import ir
from meshfast.control.admin import LOOPBACK_HOSTS, AdminApi, refusal
from meshfast.control.http import Limits, Request, format_address, parse_address
from meshfast.control.sidecar import EncodedSnapshot, Ready, Sidecar, SidecarSettings

from ..samples import BAD_WEIGHT_YAML
from ..samples import YAML_TYPE as YAML

GOOD_YAML = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  endpoints:
  - address: 127.0.0.1
"""


class FakeSnapshotError(Exception):
    pass


class FakeCore:
    """``_core.Core``'s methods, recording what it was told.

    ``gate_apply``/``gate_shutdown`` (when given) hold those calls until set, so tests
    can look at the ``starting`` and ``draining`` states.
    """

    def __init__(
        self,
        *,
        gate_apply: threading.Event | None = None,
        gate_shutdown: threading.Event | None = None,
    ) -> None:
        self.applied: list[ir.Snapshot] = []
        self.dispatchers: list[object] = []  # every dispatcher an install put in place
        self.dispatcher: object = None  # the one the workers call now
        self.shutdowns: list[float] = []
        self.protected: list[str] = []  # addresses no original destination may name
        self.reject: str | None = None
        self.fail_stats = False
        self.gate_apply = gate_apply
        self.gate_shutdown = gate_shutdown

    def apply_snapshot(self, snapshot: bytes, /) -> int:
        if self.gate_apply is not None:
            assert self.gate_apply.wait(10)
        if self.reject is not None:
            raise FakeSnapshotError(self.reject)
        decoded = msgspec.msgpack.decode(snapshot, type=ir.Snapshot)
        self.applied.append(decoded)
        return decoded.version

    def install(self, snapshot: bytes, dispatcher: object, /) -> int:
        """As the core: the snapshot and its dispatcher in one swap; refused, nothing changes."""
        version = self.apply_snapshot(snapshot)
        self.dispatcher = dispatcher
        self.dispatchers.append(dispatcher)
        return version

    def protect(self, address: str, /) -> None:
        """As the core: an address no original destination may name."""
        self.protected.append(address)

    def listeners(self) -> list[tuple[str, str]]:
        if not self.applied:
            return []
        return [(li.name, li.address.replace(":0", ":4242")) for li in self.applied[-1].listeners]

    def stats_json(self) -> str:
        if self.fail_stats:
            raise RuntimeError("stats exploded")
        return json.dumps({"listeners": {"outbound": {"requests": 3}}})

    def stats_prometheus(self) -> str:
        return "# TYPE meshfast_requests_total counter\nmeshfast_requests_total 3\n"

    def clusters_json(self) -> str:
        return json.dumps({"clusters": [{"name": "c1", "endpoints": []}]})

    def shutdown(self, drain_timeout: float = 5.0, /) -> None:
        if self.gate_shutdown is not None:
            assert self.gate_shutdown.wait(10)
        self.shutdowns.append(drain_timeout)


SNAPSHOT = ir.Snapshot(
    version=1,
    listeners=(ir.Listener(name="outbound", address="127.0.0.1:0", route_table="outbound"),),
    route_tables=(ir.RouteTable(name="outbound", virtual_hosts=()),),
)


def as_json(snapshot: ir.Snapshot) -> object:
    """The snapshot as ``/config_dump`` shows it (JSON: lists, not tuples)."""
    return json.loads(msgspec.json.encode(ir.to_builtins(snapshot)))


def make_sidecar(core: FakeCore, limits: Limits | None = None) -> Sidecar:
    settings = SidecarSettings(
        admin="127.0.0.1:0",
        outbound="127.0.0.1:0",
        drain_timeout=1.5,
        sources=("mesh.yaml",),
    )
    return Sidecar(core, SNAPSHOT, settings, core_errors=(FakeSnapshotError,), limits=limits)


async def until(condition: Callable[[], bool]) -> None:
    """Polls ``condition`` (state changes made in worker threads have no event to wait on)."""
    with trio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


@dataclass
class Running:
    core: FakeCore
    sidecar: Sidecar
    ready: Ready
    client: httpx.AsyncClient


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
async def running(nursery: trio.Nursery, core: FakeCore) -> AsyncIterator[Running]:
    sidecar = make_sidecar(core)
    ready: Ready = await nursery.start(sidecar.serve)
    async with httpx.AsyncClient(base_url=f"http://{ready.admin}", timeout=10) as client:
        yield Running(core, sidecar, ready, client)
    sidecar.request_shutdown()


# === life cycle ===


async def test_ready_reports_addresses_and_version(running: Running) -> None:
    ready = running.ready
    assert ready.version == 1
    assert ready.outbound == "127.0.0.1:4242"  # the bound address, from core.listeners()
    assert ready.listeners == (("outbound", "127.0.0.1:4242"),)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", ready.admin)
    assert ready.line() == (
        f"meshfast ready admin={ready.admin} outbound=127.0.0.1:4242 listeners=1 version=1"
    )
    assert running.core.applied == [SNAPSHOT]


async def test_ready_is_200_when_serving(running: Running) -> None:
    response = await running.client.get("/ready")
    assert response.status_code == 200
    assert response.text == "ready"
    assert response.headers["content-type"].startswith("text/plain")


async def test_ready_is_503_while_starting(nursery: trio.Nursery) -> None:
    gate = threading.Event()
    sidecar = make_sidecar(FakeCore(gate_apply=gate))
    nursery.start_soon(sidecar.serve)
    await until(lambda: sidecar.admin_address is not None)
    async with httpx.AsyncClient(base_url=f"http://{sidecar.admin_address}") as client:
        response = await client.get("/ready")
        assert (response.status_code, response.text) == (503, "starting")
        gate.set()
        await until(lambda: sidecar.state == "ready")
        assert (await client.get("/ready")).status_code == 200
    sidecar.request_shutdown()


async def test_quitquitquit_fails_readiness_then_drains_and_returns() -> None:
    gate = threading.Event()
    core = FakeCore(gate_shutdown=gate)
    sidecar = make_sidecar(core)
    async with trio.open_nursery() as nursery:
        ready: Ready = await nursery.start(sidecar.serve)
        async with httpx.AsyncClient(base_url=f"http://{ready.admin}") as client:
            response = await client.post("/quitquitquit")
            assert response.status_code == 200
            await until(lambda: sidecar.state == "draining")
            response = await client.get("/ready")
            assert (response.status_code, response.text) == (503, "draining")
        gate.set()
    # serve() returned on its own: the nursery exited without being cancelled.
    assert sidecar.state == "stopped"
    assert core.shutdowns == [1.5]


async def test_cancelled_serve_still_shuts_the_core_down(core: FakeCore) -> None:
    sidecar = make_sidecar(core)
    async with trio.open_nursery() as nursery:
        await nursery.start(sidecar.serve)
        nursery.cancel_scope.cancel()
    assert core.shutdowns == [0.0]


async def test_first_snapshot_rejected_propagates(core: FakeCore) -> None:
    core.reject = "bad regex"
    sidecar = make_sidecar(core)
    with pytest.raises(FakeSnapshotError, match="bad regex"):
        await sidecar.serve()
    assert core.shutdowns == [0.0]
    assert sidecar.state == "stopped"


@pytest.mark.parametrize(
    ("listeners", "outbound"),
    [
        (("gateway|31400", "gateway|8080"), "127.0.0.2:31400"),
        ((), "-"),
    ],
)
async def test_gateway_ready_reports_its_first_listener(
    core: FakeCore, listeners: tuple[str, ...], outbound: str
) -> None:
    snapshot = ir.Snapshot(
        version=1,
        listeners=tuple(
            ir.Listener(name=n, address=f"127.0.0.2:{n.split('|')[1]}", protocol="tcp")
            for n in listeners
        ),
    )
    settings = SidecarSettings(admin="127.0.0.1:0", gateway=True, gateway_bind="127.0.0.2")
    sidecar = Sidecar(core, snapshot, settings, core_errors=(FakeSnapshotError,))
    async with trio.open_nursery() as nursery:
        ready: Ready = await nursery.start(sidecar.serve)
        assert ready.outbound == outbound
        options = sidecar.compile_options(2)
        assert (options.gateway, options.gateway_bind) == (True, "127.0.0.2")
        sidecar.request_shutdown()


async def test_serve_refuses_a_second_run(running: Running) -> None:
    with pytest.raises(RuntimeError, match="only once"):
        await running.sidecar.serve()


# === read-only routes ===


async def test_stats_json(running: Running) -> None:
    response = await running.client.get("/stats")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "listeners": {"outbound": {"requests": 3}},
        "reloads": {"applied": 0, "unchanged": 0, "refused": 0},
    }


async def test_stats_prometheus(running: Running) -> None:
    response = await running.client.get("/stats/prometheus")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "meshfast_requests_total 3" in response.text


async def test_clusters(running: Running) -> None:
    response = await running.client.get("/clusters")
    assert response.status_code == 200
    assert response.json()["clusters"][0]["name"] == "c1"


async def test_stats_of_a_sidecar_without_filters_never_import_their_machinery(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "meshfast.filters.dispatch", None)  # importing it fails
    assert running.sidecar.filters is None
    assert (await running.client.get("/stats")).status_code == 200
    assert (await running.client.get("/stats/prometheus")).status_code == 200


async def test_config_dump(running: Running) -> None:
    response = await running.client.get("/config_dump")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "version": 1,
        "snapshot": as_json(SNAPSHOT),
        "sources": ["mesh.yaml"],
    }


async def test_an_encoded_snapshot_is_decoded_when_first_asked_for(
    nursery: trio.Nursery, core: FakeCore
) -> None:
    # What a start from the snapshot cache hands over: the bytes the core serves already.
    encoded = EncodedSnapshot(ir.encode(SNAPSHOT), core.apply_snapshot(ir.encode(SNAPSHOT)))
    settings = SidecarSettings(admin="127.0.0.1:0", outbound="127.0.0.1:0", sources=("m.yaml",))
    sidecar = Sidecar(core, encoded, settings, core_errors=(FakeSnapshotError,), applied=True)
    ready: Ready = await nursery.start(sidecar.serve)
    assert (ready.outbound, ready.version) == ("127.0.0.1:4242", 1)
    assert len(core.applied) == 1  # not applied again
    assert sidecar.reloader._served is encoded  # serving did not decode it
    async with httpx.AsyncClient(base_url=f"http://{ready.admin}", timeout=10) as client:
        dump = (await client.get("/config_dump")).json()
    assert dump == {"version": 1, "snapshot": as_json(SNAPSHOT), "sources": ["m.yaml"]}
    assert sidecar.snapshot == SNAPSHOT
    assert sidecar.base_snapshot is sidecar.snapshot
    sidecar.request_shutdown()


def test_an_encoded_snapshot_must_be_applied_already(core: FakeCore) -> None:
    with pytest.raises(ValueError, match="applied"):
        Sidecar(core, EncodedSnapshot(ir.encode(SNAPSHOT), 1), core_errors=(FakeSnapshotError,))


async def test_help_lists_routes_and_the_dashboard_is_the_index(running: Running) -> None:
    response = await running.client.get("/help")
    assert response.status_code == 200
    assert "POST  /config" in response.text
    assert "GET   /stats/prometheus" in response.text
    page = await running.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    # The page reads the admin API's own JSON routes, relative to where it is served.
    for path in ('"/stats"', '"/clusters"', '"/config_dump"'):
        assert path in page.text


async def test_core_failure_is_500_and_the_server_lives_on(running: Running) -> None:
    running.core.fail_stats = True
    assert (await running.client.get("/stats")).status_code == 500
    assert (await running.client.get("/ready")).status_code == 200


# === errors ===


async def test_unknown_path_is_404(running: Running) -> None:
    response = await running.client.get("/nope")
    assert response.status_code == 404
    assert "/nope" in response.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/ready", "GET, HEAD"),
        ("DELETE", "/stats", "GET, HEAD"),
        ("GET", "/config", "POST"),
        ("GET", "/quitquitquit", "POST"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    running: Running, method: str, path: str, allow: str
) -> None:
    response = await running.client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert running.sidecar.state == "ready"


async def test_head_answers_without_a_body(running: Running) -> None:
    response = await running.client.head("/stats")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


# === POST /config ===


async def test_post_config_applies_and_bumps_the_version(running: Running) -> None:
    response = await running.client.post("/config", content=GOOD_YAML, headers=YAML)
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 2, "changed": True}
    applied = running.core.applied[-1]
    assert applied.version == 2
    assert [li.name for li in applied.listeners] == ["outbound"]
    assert any("reviews.example.com" in c.name for c in applied.clusters)

    dump = (await running.client.get("/config_dump")).json()
    assert dump["version"] == 2
    assert dump["sources"] == ["<POST /config>"]
    assert dump["snapshot"] == as_json(applied)

    # The same config again compiles to what is served: nothing swapped, the version stays.
    response = await running.client.post("/config", content=GOOD_YAML, headers=YAML)
    assert response.json() == {"version": 2, "changed": False}
    assert running.core.applied[-1] is applied


FILTER_YAML = """
apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata:
  name: tag
spec:
  python: meshfast.examples.filters.add_header:AddHeader
  config: {request: {x-a: b}}
"""


async def test_post_config_installs_the_filter_dispatcher_with_the_snapshot(
    running: Running,
) -> None:
    from meshfast.filters.dispatch import Dispatcher

    assert running.core.dispatchers == []  # the start: no filters, none set (the core has none)
    response = await running.client.post(
        "/config", content=GOOD_YAML + "---\n" + FILTER_YAML, headers=YAML
    )
    assert response.status_code == 200, response.text
    dispatcher = running.core.dispatchers[-1]
    assert isinstance(dispatcher, Dispatcher)
    assert running.sidecar.filters is dispatcher
    assert {i: f.name for i, f in dispatcher.filters.items()} == {0: "default/tag"}
    refs = {
        f.id
        for t in running.core.applied[-1].route_tables
        for vh in t.virtual_hosts
        for rt in vh.routes
        for f in rt.action.filters
    }
    assert refs == {0}

    running.core.reject = "no"
    response = await running.client.post("/config", content=GOOD_YAML, headers=YAML)
    assert response.status_code == 400
    assert running.core.dispatchers[-1] is dispatcher  # the refused install changed nothing
    assert running.core.dispatcher is dispatcher
    assert running.sidecar.filters is dispatcher

    running.core.reject = None
    response = await running.client.post("/config", content=GOOD_YAML, headers=YAML)
    assert response.status_code == 200
    assert running.core.dispatchers[-1] is None
    assert running.sidecar.filters is None


async def test_post_config_with_problems_is_400_and_keeps_the_old_config(
    running: Running,
) -> None:
    response = await running.client.post("/config", content=BAD_WEIGHT_YAML, headers=YAML)
    assert response.status_code == 400
    lines = response.text.splitlines()
    assert lines
    for line in lines:
        assert re.match(r"<POST /config>:\d+: VirtualService/reviews: \$\.spec\.", line), line
    assert len(running.core.applied) == 1
    assert (await running.client.get("/config_dump")).json()["version"] == 1


async def test_post_config_unparsable_yaml_is_400(running: Running) -> None:
    response = await running.client.post("/config", content="kind: [unclosed\n", headers=YAML)
    assert response.status_code == 400
    assert response.text.startswith("<POST /config>:")
    assert len(running.core.applied) == 1


async def test_post_config_not_utf8_is_400(running: Running) -> None:
    response = await running.client.post("/config", content=b"\xff\xfe kind", headers=YAML)
    assert response.status_code == 400
    assert "not UTF-8" in response.text


async def test_post_config_rejected_by_the_core_is_400_and_keeps_the_old_config(
    running: Running,
) -> None:
    running.core.reject = "regex (unclosed"
    response = await running.client.post("/config", content=GOOD_YAML, headers=YAML)
    assert response.status_code == 400
    assert "FakeSnapshotError" in response.text
    assert "regex (unclosed" in response.text
    dump = (await running.client.get("/config_dump")).json()
    assert dump["version"] == 1
    assert dump["sources"] == ["mesh.yaml"]
    # The next good config gets the next version: the rejected one did not take it.
    running.core.reject = None
    assert (await running.client.post("/config", content=GOOD_YAML, headers=YAML)).json() == {
        "version": 2,
        "changed": True,
    }


async def test_post_config_too_large_is_413(running: Running) -> None:
    body = b"#" * (4 * 1024 * 1024 + 1)
    response = await running.client.post("/config", content=body, headers=YAML)
    assert response.status_code == 413
    assert len(running.core.applied) == 1
    assert (await running.client.get("/ready")).status_code == 200


async def test_post_config_too_large_chunked_is_413(running: Running) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"#" * 65536  # 5 MiB, no Content-Length

    response = await running.client.post("/config", content=chunks(), headers=YAML)
    assert response.status_code == 413
    assert len(running.core.applied) == 1


async def test_post_config_at_the_limit_is_read(running: Running) -> None:
    body = GOOD_YAML.encode() + b"#" * (4 * 1024 * 1024 - len(GOOD_YAML) - 1) + b"\n"
    assert len(body) == 4 * 1024 * 1024
    response = await running.client.post("/config", content=body, headers=YAML)
    assert response.status_code == 200, response.text


# === no browser is trusted: Host (DNS rebinding), Origin and Content-Type (CSRF) ===


def _port(running: Running) -> int:
    return parse_address(running.ready.admin)[1]


async def _unchanged(running: Running) -> None:
    """The config is the one the sidecar started with."""
    assert len(running.core.applied) == 1
    dump = (await running.client.get("/config_dump")).json()
    assert (dump["version"], dump["sources"]) == (1, ["mesh.yaml"])


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io:{port}"],
)
async def test_a_foreign_host_is_refused(running: Running, host: str) -> None:
    headers = {"host": host.format(port=_port(running))}
    response = await running.client.get("/config_dump", headers=headers)
    assert response.status_code == 403
    assert "DNS rebinding" in response.text
    assert "snapshot" not in response.text
    response = await running.client.post("/config", content=GOOD_YAML, headers={**YAML, **headers})
    assert response.status_code == 403
    await _unchanged(running)


@pytest.mark.parametrize(
    "host",
    ["localhost", "LocalHost:{port}", "127.0.0.1", "127.0.0.1:{port}", "[::1]", "[::1]:{port}"],
)
async def test_loopback_hosts_are_accepted_where_another_name_is_not(
    running: Running, host: str
) -> None:
    foreign = {"host": f"evil.example:{_port(running)}"}
    assert (await running.client.get("/config_dump", headers=foreign)).status_code == 403
    headers = {"host": host.format(port=_port(running))}
    response = await running.client.get("/config_dump", headers=headers)
    assert response.status_code == 200
    assert response.json()["version"] == 1
    response = await running.client.post("/config", content=GOOD_YAML, headers={**YAML, **headers})
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 2, "changed": True}


async def test_the_admin_address_is_accepted_with_or_without_its_port(
    nursery: trio.Nursery, core: FakeCore
) -> None:
    # 127.0.0.2 stands in for a pod IP: the address the admin was told to bind.
    settings = SidecarSettings(admin="127.0.0.2:0", outbound="127.0.0.1:0")
    sidecar = Sidecar(core, SNAPSHOT, settings, core_errors=(FakeSnapshotError,))
    ready: Ready = await nursery.start(sidecar.serve)
    assert ready.admin.startswith("127.0.0.2:")
    async with httpx.AsyncClient(base_url=f"http://{ready.admin}", timeout=10) as client:
        for host in (ready.admin, "127.0.0.2", "localhost"):
            response = await client.get("/config_dump", headers={"host": host})
            assert response.status_code == 200, host
        response = await client.get("/config_dump", headers={"host": "pod.example"})
        assert response.status_code == 403
    sidecar.request_shutdown()


async def test_a_request_without_host_is_400(running: Running) -> None:
    # HTTP/1.0 may leave Host out (h11 refuses HTTP/1.1 without one: 400 as well).
    for version in (b"1.0", b"1.1"):
        stream = await _raw(running.ready.admin)
        async with stream:
            await stream.send_all(b"GET /config_dump HTTP/" + version + b"\r\n\r\n")
            data = await _read_all(stream)
        assert data.startswith(b"HTTP/1.1 400 "), data
        assert b"snapshot" not in data


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:1",  # another web app on this machine
        "https://{admin}",
        "null",  # sandboxed frames, file: pages
    ],
)
async def test_post_config_from_a_foreign_origin_is_403_and_changes_nothing(
    running: Running, origin: str
) -> None:
    headers = {**YAML, "origin": origin.format(admin=running.ready.admin)}
    response = await running.client.post("/config", content=GOOD_YAML, headers=headers)
    assert response.status_code == 403
    assert "Origin" in response.text
    await _unchanged(running)
    # The admin's own origin (a page it served, were there one) may.
    headers = {**YAML, "origin": f"http://{running.ready.admin}"}
    response = await running.client.post("/config", content=GOOD_YAML, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"version": 2, "changed": True}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        None,
    ],
)
async def test_post_config_without_a_yaml_or_json_type_is_415_and_changes_nothing(
    running: Running, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await running.client.post("/config", content=GOOD_YAML, headers=headers)
    assert response.request.headers.get("content-type") == content_type
    assert response.status_code == 415
    assert "application/yaml" in response.text
    await _unchanged(running)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/yaml",
        "application/x-yaml",
        "text/yaml; charset=utf-8",
        "Text/X-YAML",
        "application/json",
    ],
)
async def test_post_config_takes_yaml_and_json_types(running: Running, content_type: str) -> None:
    body = GOOD_YAML
    if content_type == "application/json":
        body = json.dumps(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": {"name": "reviews"},
                "spec": {
                    "hosts": ["reviews.example.com"],
                    "location": "MESH_EXTERNAL",
                    "resolution": "STATIC",
                    "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                    "endpoints": [{"address": "127.0.0.1"}],
                },
            }
        )
    response = await running.client.post(
        "/config", content=body, headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    response = await running.client.post(
        "/config", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    assert any("reviews.example.com" in c.name for c in running.core.applied[-1].clusters)


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"host": "evil.example"},
    ],
)
async def test_quitquitquit_a_browser_could_send_is_refused_and_the_sidecar_serves_on(
    running: Running, headers: dict[str, str]
) -> None:
    response = await running.client.post("/quitquitquit", content=b"x=1", headers=headers)
    assert response.status_code in (403, 415)
    assert not running.sidecar._quit.is_set()  # no drain was asked for
    assert running.sidecar.state == "ready"
    assert (await running.client.get("/ready")).status_code == 200
    assert running.core.shutdowns == []


async def test_a_refused_origin_comes_before_a_wrong_method(running: Running) -> None:
    response = await running.client.post("/ready", headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    # A wrong method is told before a wrong body type.
    response = await running.client.post("/ready", headers={"content-type": "text/plain"})
    assert response.status_code == 405
    # Reads are not state-changing: Origin is not looked at (the Host check protects them).
    response = await running.client.get("/ready", headers={"origin": "http://evil.example"})
    assert response.status_code == 200


def _request(host: str | None, *, local: str = "", method: str = "GET") -> Request:
    headers = () if host is None else ((b"host", host.encode()),)
    return Request(method, "/config_dump", "", headers, b"", local=local)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("10.1.2.3:15000", None),  # the IP the connection arrived on (a wildcard bind)
        ("10.1.2.3", None),
        ("10.1.2.4:15000", 403),
        ("pod.example:15000", 403),
        ("0.0.0.0:15000", 403),
        ("localhost:99999", 400),
        ("localhost:x", 400),
        ("[::1", 400),
        ("[not-v6]:80", 400),
        (":15000", 400),
        (None, 400),
    ],
)
def test_refusal_of_hosts(host: str | None, status: int | None) -> None:
    refused = refusal(_request(host, local="10.1.2.3"), LOOPBACK_HOSTS)
    assert (refused and refused.status) == status


def test_refusal_knows_the_ipv4_of_an_ipv4_mapped_connection() -> None:
    assert refusal(_request("10.1.2.3", local="::ffff:10.1.2.3"), LOOPBACK_HOSTS) is None


@pytest.mark.parametrize(
    ("admin", "extra"),
    [
        ("0.0.0.0:15000", set()),
        ("[::]:15000", set()),
        ("10.1.2.3:15000", {"10.1.2.3"}),
        ("[fd00::0001]:15000", {"fd00::1"}),
        ("localhost:15000", set()),
    ],
)
def test_the_hosts_of_an_admin_told_an_address(core: FakeCore, admin: str, extra: set[str]) -> None:
    settings = SidecarSettings(admin=admin)
    sidecar = Sidecar(core, SNAPSHOT, settings, core_errors=(FakeSnapshotError,))
    assert AdminApi(sidecar).hosts == LOOPBACK_HOSTS | extra


# === the HTTP server's bounds, on raw sockets ===


async def _raw(admin: str) -> trio.SocketStream:
    host, port = parse_address(admin)
    return await trio.open_tcp_stream(host, port)


async def _read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_keep_alive_serves_pipelined_requests_on_one_connection(running: Running) -> None:
    stream = await _raw(running.ready.admin)
    async with stream:
        request = b"GET /ready HTTP/1.1\r\nhost: localhost\r\n\r\n"
        last = b"GET /ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        await stream.send_all(request * 2 + last)
        data = await _read_all(stream)
    assert data.count(b"HTTP/1.1 200 ") == 3


async def test_huge_header_block_is_431(running: Running) -> None:
    stream = await _raw(running.ready.admin)
    async with stream:
        await stream.send_all(b"GET /ready HTTP/1.1\r\nhost: localhost\r\nx-big: " + b"a" * 70000)
        data = await _read_all(stream)
    assert data.startswith(b"HTTP/1.1 431 ")


async def test_garbage_is_400(running: Running) -> None:
    stream = await _raw(running.ready.admin)
    async with stream:
        await stream.send_all(b"\x16\x03\x01 hello, this is not http\r\n\r\n")
        data = await _read_all(stream)
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_slow_client_is_cut_off(nursery: trio.Nursery, core: FakeCore) -> None:
    sidecar = make_sidecar(core, Limits(timeout=0.2))
    ready: Ready = await nursery.start(sidecar.serve)
    stream = await _raw(ready.admin)
    async with stream:
        await stream.send_all(b"GET /ready HTTP/1.1\r\nhost: localhost\r\n")  # never finished
        assert await _read_all(stream) == b""  # closed, within fail_after(5)
    stream = await _raw(ready.admin)
    async with stream:
        await stream.send_all(
            b"POST /config HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10\r\n\r\nab"
        )
        assert (await _read_all(stream)).startswith(b"HTTP/1.1 408 ")
    sidecar.request_shutdown()


async def test_connections_beyond_the_limit_wait_for_a_slot(
    nursery: trio.Nursery, core: FakeCore
) -> None:
    sidecar = make_sidecar(core, Limits(max_connections=1))
    ready: Ready = await nursery.start(sidecar.serve)
    idle = await _raw(ready.admin)
    await idle.send_all(b"GET /ready HTTP/1.1\r\nhost: localhost\r\n\r\n")
    assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200 ")  # holds the only slot
    async with httpx.AsyncClient(base_url=f"http://{ready.admin}") as client:
        with trio.move_on_after(0.3) as scope:
            await client.get("/ready")
        assert scope.cancelled_caught  # not served while the slot is taken
        await idle.aclose()
        with trio.fail_after(5):
            assert (await client.get("/ready")).status_code == 200
    sidecar.request_shutdown()


# === helpers ===


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:15000", ("127.0.0.1", 15000)),
        ("[::1]:80", ("::1", 80)),
        (":8080", ("0.0.0.0", 8080)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "host:port", "a:70000", ""])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)


def test_format_address() -> None:
    assert format_address(("127.0.0.1", 80)) == "127.0.0.1:80"
    assert format_address(("::1", 80, 0, 0)) == "[::1]:80"


async def test_logging_lists_and_sets_levels(running: Running) -> None:
    from meshfast.control import logs

    logs.setup()
    listed = (await running.client.get("/logging")).json()["loggers"]
    assert listed["meshfast"] == "warning"
    assert listed["meshfast.filters"] == "warning"  # follows meshfast
    changed = await running.client.post("/logging?meshfast.filters=debug")
    assert changed.status_code == 200
    assert changed.json()["loggers"]["meshfast.filters"] == "debug"
    assert changed.json()["loggers"]["meshfast.admin"] == "warning"
    every = (await running.client.post("/logging?level=error")).json()["loggers"]
    assert set(every.values()) == {"error"}
    bad = await running.client.post("/logging?level=loud")
    assert bad.status_code == 400
    assert "unknown level 'loud'" in bad.text
    assert (await running.client.post("/logging?nosuch=info")).status_code == 400
    assert (await running.client.post("/logging")).status_code == 400
    logs.set_level("level", "warning")
