"""The control plane's DNS resolver, with a fake resolve function (no network)."""

from __future__ import annotations

import io

import trio

from meshfast.config import CompileOptions, compile_config, dns, ir, load_config_text
from meshfast.control.resolver import Resolver, getaddrinfo
from meshfast.control.sidecar import Sidecar, SidecarSettings

from .test_admin import FakeCore, FakeSnapshotError, until


class FakeDns:
    """Answers from a dict; a name missing from it fails like getaddrinfo does."""

    def __init__(self, answers: dict[str, tuple[str, ...]]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []
        self.hang: set[str] = set()

    async def __call__(self, name: str) -> tuple[str, ...]:
        self.asked.append(name)
        if name in self.hang:
            await trio.sleep_forever()
        if name not in self.answers:
            raise OSError(-2, "Name or service not known")
        return self.answers[name]


async def test_refresh_reports_address_set_changes_only() -> None:
    fake = FakeDns({"a.example": ("10.0.0.1", "10.0.0.2")})
    log = io.StringIO()
    resolver = Resolver(fake, log=log)
    assert await resolver.refresh(["a.example"]) is True
    assert resolver.addresses == {"a.example": ("10.0.0.1", "10.0.0.2")}
    fake.answers["a.example"] = ("10.0.0.2", "10.0.0.1")  # rotated: same set
    assert await resolver.refresh(["a.example"]) is False
    assert resolver.addresses["a.example"] == ("10.0.0.1", "10.0.0.2")
    fake.answers["a.example"] = ("10.0.0.3",)
    assert await resolver.refresh(["a.example"]) is True
    assert resolver.addresses["a.example"] == ("10.0.0.3",)
    assert log.getvalue() == ""


async def test_failures_keep_the_last_answer_and_log_once_per_failing_streak() -> None:
    fake = FakeDns({"a.example": ("10.0.0.1",)})
    log = io.StringIO()
    resolver = Resolver(fake, log=log, timeout=0.05)
    fake.hang.add("slow.example")
    assert await resolver.refresh(["a.example", "gone.example", "slow.example"]) is True
    assert await resolver.refresh(["gone.example", "slow.example"]) is False
    assert resolver.addresses == {"a.example": ("10.0.0.1",)}
    del fake.answers["a.example"]
    assert await resolver.refresh(["a.example"]) is False
    assert await resolver.refresh(["a.example"]) is False
    assert resolver.addresses == {"a.example": ("10.0.0.1",)}  # last good answer kept
    fake.answers["a.example"] = ("10.0.0.1",)
    assert await resolver.refresh(["a.example"]) is False  # back, same set
    del fake.answers["a.example"]
    await resolver.refresh(["a.example"])
    assert log.getvalue().splitlines() == [
        "meshfast: cannot resolve gone.example: [Errno -2] Name or service not known"
        " (keeping the hostname)",
        "meshfast: cannot resolve slow.example: no answer within 0.05s (keeping the hostname)",
        "meshfast: cannot resolve a.example: [Errno -2] Name or service not known"
        " (keeping its last addresses)",
        "meshfast: cannot resolve a.example: [Errno -2] Name or service not known"
        " (keeping its last addresses)",
    ]


async def test_only_new_names() -> None:
    fake = FakeDns({"a.example": ("10.0.0.1",), "b.example": ("10.0.0.2",)})
    resolver = Resolver(fake)
    await resolver.refresh(["a.example"])
    await resolver.refresh(["a.example", "b.example"], only_new=True)
    assert fake.asked == ["a.example", "b.example"]
    assert resolver.known("b.example")


async def test_getaddrinfo_resolves_loopback_names() -> None:
    found = await getaddrinfo("localhost")
    assert found
    assert set(found) <= {"127.0.0.1", "::1"}


# === with a Sidecar ===


def se(name: str, address: str, resolution: str = "DNS") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.example.com]
  resolution: {resolution}
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {address}, ports: {{http: 9000}}}}]
"""


def addresses(snapshot: ir.Snapshot, cluster: str) -> list[str]:
    [found] = [c for c in snapshot.clusters if c.name == cluster]
    return [e.address for e in found.endpoints]


API = "outbound|80||api.example.com"


async def test_sidecar_resolves_before_the_first_apply_and_repushes_on_change() -> None:
    config = load_config_text(se("api", "backend.internal"))
    snapshot = compile_config(config, CompileOptions(outbound="127.0.0.1:0"))
    fake = FakeDns({"backend.internal": ("10.0.0.1",)})
    core = FakeCore()
    settings = SidecarSettings(admin="127.0.0.1:0", outbound="127.0.0.1:0", dns_refresh=0.02)
    sidecar = Sidecar(
        core,
        snapshot,
        settings,
        core_errors=(FakeSnapshotError,),
        dns_plan=dns.plan(config),
        resolve=fake,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sidecar.serve)
        # the very first snapshot the core saw has the address, not the hostname
        assert addresses(core.applied[0], API) == ["10.0.0.1:9000"]
        assert addresses(sidecar.base_snapshot, API) == ["backend.internal:9000"]
        assert sidecar.snapshot == core.applied[0]

        # unchanged answers: no push
        asked = len(fake.asked)
        await until(lambda: len(fake.asked) >= asked + 3)
        assert len(core.applied) == 1

        fake.answers["backend.internal"] = ("10.0.0.2", "10.0.0.1")
        # The core hears of it (in a worker thread) before the sidecar records the version.
        await until(lambda: len(core.applied) == 2 and sidecar.version == 2)
        assert core.applied[1].version == 2
        assert addresses(core.applied[1], API) == ["10.0.0.1:9000", "10.0.0.2:9000"]
        assert sidecar.version == 2

        # POST /config: new names are resolved before the apply, known ones are reused
        fake.answers["other.internal"] = ("10.0.9.9",)
        asked_before = list(fake.asked)
        yaml = se("api", "backend.internal") + "---\n" + se("web", "other.internal")
        version = await sidecar.apply_yaml(yaml)
        assert version == 3
        assert "other.internal" in fake.asked[len(asked_before) :]
        latest = core.applied[-1]
        assert addresses(latest, "outbound|80||web.example.com") == ["10.0.9.9:9000"]
        assert addresses(latest, API) == ["10.0.0.1:9000", "10.0.0.2:9000"]

        # a name that stops resolving keeps its addresses: no push
        count = len(core.applied)
        del fake.answers["other.internal"]
        asked = len(fake.asked)
        await until(lambda: len(fake.asked) >= asked + 4)
        assert len(core.applied) == count
        sidecar.request_shutdown()


async def test_unresolvable_name_goes_to_the_core_as_a_hostname() -> None:
    config = load_config_text(se("api", "nowhere.internal", "DNS_ROUND_ROBIN"))
    snapshot = compile_config(config, CompileOptions(outbound="127.0.0.1:0"))
    core = FakeCore()
    settings = SidecarSettings(admin="127.0.0.1:0", outbound="127.0.0.1:0", dns_refresh=0)
    sidecar = Sidecar(
        core,
        snapshot,
        settings,
        core_errors=(FakeSnapshotError,),
        dns_plan=dns.plan(config),
        resolve=FakeDns({}),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sidecar.serve)
        assert addresses(core.applied[0], API) == ["nowhere.internal:9000"]
        sidecar.request_shutdown()


async def test_reload_options_carry_the_locality() -> None:
    settings = SidecarSettings(locality="eu/west/1")
    assert Sidecar.options_for(settings, 7).locality == "eu/west/1"
    sidecar = Sidecar(FakeCore(), ir.Snapshot(), settings, core_errors=(FakeSnapshotError,))
    assert sidecar.compile_options(3).locality == "eu/west/1"
