"""The deploy path (``meshfast.deploy``): sources → a Deployment → the core serving it, with
the real core in this process for what ``install`` promises."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import msgspec
import pytest

from meshfast import _core
from meshfast.config import CompileOptions, Config, ConfigError, ir, load_config
from meshfast.deploy import Deployment, Sources, deploy, install
from meshfast.filters.dispatch import Dispatcher

from .e2e.conftest import service_entry


def http_filter(name: str, target: str, config: str = "{}") -> str:
    return (
        "---\napiVersion: meshfast.io/v1alpha1\nkind: HttpFilter\n"
        f"metadata: {{name: {name}}}\nspec:\n  python: {target}\n  config: {config}\n"
    )


def tag_filter(value: str) -> str:
    target = "meshfast.examples.filters.add_header:AddHeader"
    return http_filter("tag", target, f"{{request: {{x-tag: {value}}}}}")


def filter_refs(snapshot: ir.Snapshot) -> list[ir.FilterRef]:
    return [
        f
        for t in snapshot.route_tables
        for vh in t.virtual_hosts
        for rt in vh.routes
        for f in rt.action.filters
    ]


# === sources → deployment ===


def test_files_and_text_become_one_deployment(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service_entry("a.example.com", 80, [("127.0.0.1:1", {})]))
    text = service_entry("b.example.com", 80, [("127.0.0.1:2", {})])
    sources = Sources((str(tmp_path),), ((text, "<yaml>"),), namespace="shop")
    assert sources.names == (str(tmp_path), "<yaml>")

    deployment = deploy(sources, CompileOptions(namespace="shop", version=7))
    assert deployment.version == 7
    assert deployment.data == ir.encode(deployment.snapshot)
    assert (deployment.plan, deployment.dispatcher, deployment.cacheable) == ({}, None, True)
    assert {k[2]: v for k, v in deployment.config.sources.items()} == {
        "a": str(tmp_path / "a.yaml"),
        "b": "<yaml>",
    }
    clusters = {c.name for c in deployment.snapshot.clusters}
    assert {"outbound|80||a.example.com", "outbound|80||b.example.com"} <= clusters


def test_every_problem_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        service_entry("a.example.com", 80, [("127.0.0.1:1", {})])
        + http_filter("f", "nosuchmodule_q:F")
    )
    with pytest.raises(ConfigError) as info:
        deploy(Sources((str(path),)), CompileOptions())
    assert [str(p) for p in info.value.problems] == [
        f'{path}:19: HttpFilter/f: $.spec.python: cannot import module "nosuchmodule_q"'
        f" from PYTHONPATH or {tmp_path}"
    ]


def test_filters_become_a_dispatcher_with_the_compilers_ids() -> None:
    text = (
        service_entry("a.example.com", 80, [("127.0.0.1:1", {})])
        + tag_filter("x")
        + http_filter("log", "meshfast.examples.filters.logging_filter:AccessLog")
    )
    deployment = deploy(Sources.text(text, "<t>"), CompileOptions())
    assert isinstance(deployment.dispatcher, Dispatcher)
    assert {i: f.name for i, f in deployment.dispatcher.filters.items()} == {
        0: "default/log",
        1: "default/tag",
    }
    assert {(f.id, f.name) for f in filter_refs(deployment.snapshot)} == {
        (0, "default/log"),
        (1, "default/tag"),
    }
    assert not deployment.cacheable


def test_a_config_loaded_without_filters_gets_them_before_it_compiles(tmp_path: Path) -> None:
    # The config pipeline alone does not import filter modules; deploy builds them first, so
    # the compiled routes still carry the body limits their classes declare.
    module = f"flt_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from meshfast.filters import HttpFilter

            class Reads(HttpFilter):
                request_body_limit = 1024
            """
        )
    )
    path = tmp_path / "mesh.yaml"
    path.write_text(
        service_entry("a.example.com", 80, [("127.0.0.1:1", {})])
        + http_filter("reads", f"{module}:Reads")
    )
    config = load_config([path])
    assert config.filters == {}
    assert module not in sys.modules
    deployment = deploy(config, CompileOptions())
    assert {f.request_body_limit for f in filter_refs(deployment.snapshot)} == {1024}
    assert deployment.config is config  # as loaded
    assert deployment.dispatcher is not None


def test_prepare_runs_before_the_compile_and_the_config_is_kept_as_loaded() -> None:
    text = service_entry("a.example.com", 80, [("127.0.0.1:1", {})])
    extra = load_config(
        [], texts=[(service_entry("b.example.com", 80, [("127.0.0.1:2", {})]), "<x>")]
    )
    seen: list[Config] = []

    def prepare(config: Config) -> Config:
        seen.append(config)
        return replace(
            config,
            resources=[*config.resources, *extra.resources],
            sources={**config.sources, **extra.sources},
        )

    deployment = deploy(Sources.text(text, "<t>"), CompileOptions(), prepare=prepare)
    assert seen == [deployment.config]
    assert len(deployment.config.resources) == 1
    assert "outbound|80||b.example.com" in {c.name for c in deployment.snapshot.clusters}


def test_dns_endpoints_are_planned_not_resolved() -> None:
    text = service_entry("a.example.com", 80, [("127.0.0.1:1", {})]).replace(
        "resolution: STATIC", "resolution: DNS"
    )
    text = text.replace("address: 127.0.0.1", "address: backend.internal")
    deployment = deploy(Sources.text(text, "<t>"), CompileOptions())
    assert deployment.plan
    assert not deployment.cacheable
    (cluster,) = [c for c in deployment.snapshot.clusters if c.name.endswith("a.example.com")]
    assert [e.address for e in cluster.endpoints] == ["backend.internal:1"]


# === install ===


class RecordingCore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def apply_snapshot(self, snapshot: bytes, /) -> int:
        self.calls.append(("apply_snapshot", snapshot))
        return 1

    def install(self, snapshot: bytes, dispatcher: object, /) -> int:
        self.calls.append(("install", dispatcher))
        return 1


def test_install_without_filters_before_or_after_only_swaps_the_snapshot() -> None:
    core, d = RecordingCore(), Dispatcher({})
    install(core, b"s", None)
    install(core, b"s", d)
    install(core, b"s", None, d)
    assert core.calls == [("apply_snapshot", b"s"), ("install", d), ("install", None)]


@pytest.fixture
def upstream() -> Iterator[_core.EchoServer]:
    server = _core.EchoServer("127.0.0.1:0", name="up")
    yield server
    server.stop()


@pytest.fixture
def core() -> Iterator[_core.Core]:
    core = _core.Core(workers=1)
    yield core
    core.shutdown(0.0)


def _tagged(core: _core.Core) -> str | None:
    outbound = dict(core.listeners())["outbound"]
    r = httpx.get(f"http://{outbound}/", headers={"host": "a.example.com"}, timeout=10)
    assert r.status_code == 200, r.text
    tag: str | None = r.json()["headers"].get("x-tag")
    return tag


def _deployed(upstream: _core.EchoServer, tag: str, version: int) -> Deployment:
    text = service_entry("a.example.com", 80, [(upstream.address, {})]) + tag_filter(tag)
    return deploy(
        Sources.text(text, "<t>"), CompileOptions(outbound="127.0.0.1:0", version=version)
    )


def test_a_refused_snapshot_leaves_the_old_dispatcher_serving(
    core: _core.Core, upstream: _core.EchoServer
) -> None:
    first = _deployed(upstream, "one", 1)
    assert install(core, first.data, first.dispatcher) == 1
    assert _tagged(core) == "one"
    assert isinstance(first.dispatcher, Dispatcher)
    first.dispatcher.errors["default/tag"] = 2  # as if it had failed twice

    # Bytes the core cannot read, then a snapshot whose listener cannot be bound.
    refused = _deployed(upstream, "two", 2)
    with pytest.raises(_core.SnapshotError):
        install(core, b"\xc1 not a snapshot", refused.dispatcher, first.dispatcher)
    assert _tagged(core) == "one"
    listener = msgspec.structs.replace(refused.snapshot.listeners[0], address="192.0.2.1:1")
    unbindable = msgspec.structs.replace(refused.snapshot, listeners=(listener,))
    with pytest.raises(_core.CoreError):
        install(core, ir.encode(unbindable), refused.dispatcher, first.dispatcher)
    assert _tagged(core) == "one"  # the old snapshot, with the old dispatcher

    second = _deployed(upstream, "two", 2)
    assert install(core, second.data, second.dispatcher, first.dispatcher) == 2
    assert _tagged(core) == "two"
    assert isinstance(second.dispatcher, Dispatcher)
    assert second.dispatcher.errors == {"default/tag": 2}  # the counts went over with it
