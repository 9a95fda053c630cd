"""The Reloader (``meshfast.control.reload``) on its own: what the core serves and every
change to it, with the admin API's fake core (no sidecar, no admin server)."""

from __future__ import annotations

import sys

import pytest
import trio

from meshfast.config import ConfigError, ir
from meshfast.control.reload import KEEP, EncodedSnapshot, Reloader
from meshfast.control.resolver import Resolver
from meshfast.control.settings import SidecarSettings
from meshfast.filters.dispatch import Dispatcher

from .test_admin import FILTER_YAML, GOOD_YAML, SNAPSHOT, FakeCore, FakeSnapshotError


def reloader(
    core: FakeCore,
    *,
    snapshot: ir.Snapshot | EncodedSnapshot = SNAPSHOT,
    applied: bool = False,
    dispatcher: Dispatcher | None = None,
) -> Reloader:
    settings = SidecarSettings(outbound="127.0.0.1:0", sources=("mesh.yaml",))
    return Reloader(
        core,
        snapshot,
        settings,
        core_errors=(FakeSnapshotError,),
        resolver=Resolver(),
        applied=applied,
        dispatcher=dispatcher,
    )


async def test_start_applies_once_unless_the_caller_did() -> None:
    core = FakeCore()
    assert await reloader(core).start() == 1
    assert core.applied == [SNAPSHOT]
    assert core.dispatchers == []  # no filters: only the snapshot

    core = FakeCore()
    assert await reloader(core, applied=True).start() == 1
    assert core.applied == []

    core, dispatcher = FakeCore(), Dispatcher({})
    await reloader(core, dispatcher=dispatcher).start()
    assert core.dispatcher is dispatcher  # installed with its snapshot


def test_an_encoded_snapshot_must_be_applied_already() -> None:
    with pytest.raises(ValueError, match="applied"):
        reloader(FakeCore(), snapshot=EncodedSnapshot(ir.encode(SNAPSHOT), 1))


async def test_a_new_config_is_the_next_version_with_its_filters() -> None:
    core = FakeCore()
    r = reloader(core)
    await r.start()
    assert await r.apply_yaml(GOOD_YAML + "---\n" + FILTER_YAML) == 2
    dispatcher = r.dispatcher
    assert isinstance(dispatcher, Dispatcher)
    assert core.dispatcher is dispatcher
    assert (r.version, r.sources, r.snapshot) == (2, ("<POST /config>",), core.applied[-1])
    assert r.config is not None
    assert [res.metadata.name for res in r.config.resources] == ["reviews", "tag"]

    # Refused by the core: nothing changes, on either side.
    core.reject = "no"
    with pytest.raises(FakeSnapshotError):
        await r.apply_yaml(GOOD_YAML, source="<other>")
    assert (r.version, r.sources, r.dispatcher, core.dispatcher) == (
        2,
        ("<POST /config>",),
        dispatcher,
        dispatcher,
    )
    # Invalid: nothing reaches the core.
    core.reject = None
    applied = len(core.applied)
    with pytest.raises(ConfigError):
        await r.apply_yaml("kind: Nope\n")
    assert (len(core.applied), r.version) == (applied, 2)

    # A compiled snapshot keeps the dispatcher by default (a DNS re-apply does the same).
    three = ir.Snapshot(version=3, listeners=SNAPSHOT.listeners, route_tables=())
    assert await r.apply(three, ["compiled"], filters=KEEP) == 3
    assert (r.dispatcher, core.dispatcher) == (dispatcher, dispatcher)
    assert r.config is None


async def test_applies_take_turns() -> None:
    core = FakeCore()
    r = reloader(core)
    await r.start()
    versions: list[int] = []

    async def post(i: int) -> None:
        # Three different configs (the same one again would not be applied: see below).
        versions.append(await r.apply_yaml(GOOD_YAML.replace("127.0.0.1", f"127.0.0.{i}")))

    async with trio.open_nursery() as nursery:
        for i in range(2, 5):
            nursery.start_soon(post, i)
    assert sorted(versions) == [2, 3, 4]
    assert [s.version for s in core.applied] == [1, 2, 3, 4]


async def test_a_config_compiled_to_what_is_served_is_not_applied() -> None:
    core = FakeCore()
    r = reloader(core)
    await r.start()
    assert await r.apply_yaml(GOOD_YAML) == 2
    served = core.applied[-1]
    # Reformatted, commented: the same IR. No swap, the version stays, counted as unchanged.
    same = "# a comment\n" + GOOD_YAML.replace(
        "hosts: [reviews.example.com]", "hosts:\n  - reviews.example.com"
    )
    assert await r.apply_yaml(same, source="again.yaml") == 2
    assert core.applied[-1] is served
    assert r.sources == ("again.yaml",)
    assert r.counts() == {"applied": 1, "unchanged": 1, "refused": 0}
    # Anything that changes the IR is applied.
    assert await r.apply_yaml(GOOD_YAML.replace("127.0.0.1", "127.0.0.2")) == 3
    with pytest.raises(ConfigError):
        await r.apply_yaml(GOOD_YAML.replace("STATIC", "SOMETIMES"))
    assert r.counts() == {"applied": 2, "unchanged": 1, "refused": 1}


async def test_a_config_with_filters_is_applied_even_when_unchanged() -> None:
    """A filter's module may have changed behind the same config: it is installed again."""
    core = FakeCore()
    r = reloader(core)
    await r.start()
    assert await r.apply_yaml(FILTER_YAML) == 2
    assert await r.apply_yaml(FILTER_YAML) == 3
    assert r.counts() == {"applied": 2, "unchanged": 0, "refused": 0}


async def test_configs_without_filters_never_import_the_filter_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("meshfast.filters.dispatch", "meshfast.filters.registry"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails
    core = FakeCore()
    r = reloader(core)
    await r.start()
    assert await r.apply_yaml(GOOD_YAML) == 2
    assert r.dispatcher is None


async def test_dns_changes_apply_only_while_live() -> None:
    core = FakeCore()
    r = reloader(core)
    await r.start()
    await r.dns_changed()
    r.live = True
    await r.dns_changed()  # no DNS names: nothing changed, nothing applied
    assert len(core.applied) == 1
    assert r.dns_names() == set()


async def test_a_config_with_certificate_files_is_applied_even_when_unchanged() -> None:
    """The PEM file behind a path may have been rotated: a reload is how it is read."""
    tls = (
        GOOD_YAML
        + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ssl/certs/ca-certificates.crt}
"""
    )
    core = FakeCore()
    r = reloader(core)
    await r.start()
    assert await r.apply_yaml(tls) == 2
    assert await r.apply_yaml(tls) == 3
    assert r.counts() == {"applied": 2, "unchanged": 0, "refused": 0}
