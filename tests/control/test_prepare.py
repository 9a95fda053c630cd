"""The control Sidecar's hooks for the embedding API: ``prepare``, ``apply_config``, ``reapply``
and ``config`` (with the fake core of the admin API's tests)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
import trio

from meshfast.config import Config, ConfigError, Problem, load_config_text
from meshfast.control.sidecar import Sidecar, SidecarSettings
from meshfast.filters.dispatch import Dispatcher

from ..samples import YAML_TYPE
from .test_admin import GOOD_YAML, SNAPSHOT, FakeCore, FakeSnapshotError

FILTER = """---
apiVersion: meshfast.io/v1alpha1
kind: HttpFilter
metadata: {name: added}
spec:
  python: meshfast.examples.filters.add_header:AddHeader
"""


class AddFilter:
    """A ``prepare`` that adds FILTER's resource when ``on`` (refuses when ``refuse``);
    records what it was given."""

    def __init__(self) -> None:
        self.on = False
        self.refuse = False
        self.seen: list[Config] = []
        self.extra = load_config_text(FILTER)

    def __call__(self, config: Config) -> Config:
        self.seen.append(config)
        if self.refuse:
            raise ConfigError([Problem("x.yaml", 3, "HttpFilter", "added", "$", "no")])
        if not self.on:
            return config
        return replace(
            config,
            resources=[*config.resources, *self.extra.resources],
            sources={**config.sources, **self.extra.sources},
            filters={**config.filters, **self.extra.filters},
        )


def filter_ids(core: FakeCore) -> set[int]:
    return {
        f.id
        for t in core.applied[-1].route_tables
        for vh in t.virtual_hosts
        for rt in vh.routes
        for f in rt.action.filters
    }


async def test_prepare_sees_every_loaded_config_and_reapply_uses_it(
    nursery: trio.Nursery,
) -> None:
    core, prepare = FakeCore(), AddFilter()
    settings = SidecarSettings(admin="127.0.0.1:0", outbound="127.0.0.1:0")
    config = load_config_text(GOOD_YAML)
    sidecar = Sidecar(
        core, SNAPSHOT, settings, core_errors=(FakeSnapshotError,), config=config, prepare=prepare
    )
    ready = await nursery.start(sidecar.serve)
    assert sidecar.config is config
    assert prepare.seen == []  # the first snapshot was compiled by the caller

    prepare.on = True
    assert await sidecar.reapply() == 2
    assert prepare.seen == [config]
    assert sidecar.config is config  # as loaded, before prepare
    assert isinstance(core.dispatchers[-1], Dispatcher)
    assert filter_ids(core) == {0}

    # POST /config: loaded, then prepared.
    async with httpx.AsyncClient(base_url=f"http://{ready.admin}") as client:
        r = await client.post("/config", headers=YAML_TYPE, content=GOOD_YAML)
    assert r.json() == {"version": 3, "changed": True}
    assert filter_ids(core) == {0}
    assert sidecar.sources == ("<POST /config>",)

    # apply_config: a loader run in a thread, with its sources.
    assert await sidecar.apply_config(lambda: config, ["a.yaml", "b.yaml"]) == 4
    assert sidecar.sources == ("a.yaml", "b.yaml")

    # A prepare that refuses: ConfigError, nothing applied.
    prepare.refuse = True
    with pytest.raises(ConfigError, match=r"x\.yaml:3"):
        await sidecar.reapply()
    assert sidecar.version == 4

    # A compiled snapshot applied as it is: the config is no longer known.
    await sidecar.apply(SNAPSHOT, ["compiled"])
    assert sidecar.config is None
    with pytest.raises(RuntimeError, match="not known"):
        await sidecar.reapply()
    sidecar.request_shutdown()
