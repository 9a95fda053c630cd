"""``meshfast.Sidecar``: a sidecar inside your own Trio program, with filters given as objects.

The same machinery as ``meshfast run`` (the Rust core, the control layer's
:class:`~meshfast.control.sidecar.Sidecar` and its admin API), started in-process::

    async with meshfast.Sidecar(yaml=CONFIG) as car:  # every address on a free port
        await car.add_filter(Tenant("blue"), hosts=["reviews"])
        async with httpx.AsyncClient() as client:
            await client.get(f"{car.url}/", headers={"host": "reviews"})

or ``await nursery.start(car.serve)`` in a nursery of your own, then ``await car.stop()``.

Filters given to :meth:`Sidecar.add_filter` are ``HttpFilter`` resources like those read from
YAML — the same ids, scoping (``hosts``, ``route``), ``failureStatus``, error counters and
containment — except that the instance is yours instead of being built from ``module:Class``.
They are added to every config this sidecar loads: the one it starts with,
:meth:`Sidecar.reload` and ``POST /config`` on its admin API.

Configs load when they are given: a broken one raises ``ConfigError`` (every problem, with
its file and line; YAML text is the file ``<yaml>``) from the constructor or from
:meth:`Sidecar.reload`, and the sidecar keeps serving the config it had.

The sidecar's filters run on the core's worker threads and take the GIL: while it serves in
your process, do not block the Trio thread on a synchronous call that waits for it (an
``httpx.get`` through ``car.url``) — use an async client or ``trio.to_thread``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias, TypeVar

import msgspec
import trio

from meshfast.config import resources as r
from meshfast.control.http import parse_address
from meshfast.filters.api import HttpFilter
from meshfast.filters.dispatch import failure_counts

if TYPE_CHECKING:
    from meshfast.config import Config
    from meshfast.control.sidecar import Ready
    from meshfast.control.sidecar import Sidecar as Control
    from meshfast.deploy import Deployment

__all__ = ["YAML_SOURCE", "Paths", "Sidecar"]

# The file name problems in YAML text (``yaml=``) are reported under.
YAML_SOURCE = "<yaml>"
# The source of the filters added with ``add_filter`` (config_dump, errors).
FILTER_SOURCE = "<Sidecar.add_filter>"

Paths: TypeAlias = "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]"
State = Literal["new", "starting", "running", "stopping", "stopped"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Attached:
    """A filter given to :meth:`Sidecar.add_filter` and the resource it stands for."""

    instance: HttpFilter
    resource: r.HttpFilter


class Sidecar:
    """A sidecar proxy served in this process, from Trio.

    ``config``: YAML files or folders (one path or a list); ``yaml``: YAML text, read after
    them.  The keywords mirror ``meshfast run``'s flags, with in-process defaults: every
    address on loopback port 0 (a free port; the bound ones are :attr:`outbound`,
    :attr:`admin`, :attr:`listeners`) and one worker thread.  ``inbound`` serves when ``app``
    (the local workload) or a ``Sidecar`` resource's ingress asks for it.

    Raises ``ConfigError`` when the config is invalid, ``ValueError`` for a malformed address.
    """

    def __init__(
        self,
        config: Paths | None = None,
        *,
        yaml: str | None = None,
        outbound: str = "127.0.0.1:0",
        admin: str = "127.0.0.1:0",
        inbound: str = "127.0.0.1:0",
        app: str | None = None,
        workers: int = 1,
        namespace: str = "default",
        drain_timeout: float = 5.0,
        locality: str = "",
        labels: Mapping[str, str] | None = None,
        dns_refresh: float = 30.0,
    ) -> None:
        from meshfast.control.settings import SidecarSettings

        for what, address in (("outbound", outbound), ("admin", admin), ("inbound", inbound)):
            _check_address(what, address)
        if app is not None:
            _check_address("app", app)
        if workers < 0:
            raise ValueError(f"workers must be 0 (one per CPU) or more, not {workers}")
        if not drain_timeout >= 0:
            raise ValueError(f"drain_timeout must be 0 or more, not {drain_timeout}")
        self._workers = workers
        self._paths, self._yaml = _sources(config, yaml)
        self._settings = SidecarSettings(
            admin=admin,
            namespace=namespace,
            outbound=outbound,
            inbound=inbound,
            app=app,
            drain_timeout=drain_timeout,
            sources=self._source_names(),
            locality=locality,
            labels=dict(labels or {}),
            dns_refresh=dns_refresh,
        )
        # Copy-on-write: the control layer's worker threads read it while Trio replaces it.
        self._filters: Mapping[str, _Attached] = MappingProxyType({})
        self._config = self._check(self._load(self._paths, self._yaml))
        self._state: State = "new"
        self._stop_requested = False
        self._control: Control | None = None
        self._ready: Ready | None = None
        self._lock = trio.Lock()  # add_filter, remove_filter, reload: one at a time
        self._settled = trio.Event()  # serving, or serve() has returned
        self._done = trio.Event()  # serve() has returned
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None

    # === config ===

    def _source_names(self) -> tuple[str, ...]:
        return (*self._paths, *((YAML_SOURCE,) if self._yaml is not None else ()))

    def _load(self, paths: tuple[str, ...], text: str | None) -> Config:
        from meshfast.deploy import Sources

        texts = () if text is None else ((text, YAML_SOURCE),)
        return Sources(paths, texts, self._settings.namespace).load()

    def _deploy(self, config: Config) -> Deployment:
        """What the core serves for ``config`` with this sidecar's filters (the deploy path
        of every sidecar; ``ConfigError`` when it does not compile)."""
        from meshfast.control.settings import options_for
        from meshfast.deploy import deploy

        return deploy(config, options_for(self._settings, 1), prepare=self._prepare)

    def _check(self, config: Config) -> Config:
        """``config``, once it deployed with this sidecar's filters (else ``ConfigError``)."""
        self._deploy(config)
        return config

    def _prepare(self, config: Config) -> Config:
        """``config`` with this sidecar's filters added as ``HttpFilter`` resources, their
        instances already built (the control layer's ``prepare``: runs in a worker thread)."""
        attached = self._filters  # one read: the mapping is never changed in place
        if not attached:
            return config
        from meshfast.config import Config, ConfigError, Problem

        resources = list(config.resources)
        sources = dict(config.sources)
        filters = dict(config.filters)
        problems = []
        for a in attached.values():
            meta = a.resource.metadata
            key = ("HttpFilter", meta.namespace, meta.name)
            source = sources.get(key)
            if source is not None:
                message = f"duplicate HttpFilter {meta.namespace}/{meta.name}: add_filter has it"
                line = self._line_of(source, key)
                problems.append(
                    Problem(source, line, "HttpFilter", meta.name, "$.metadata.name", message)
                )
                continue
            resources.append(a.resource)
            sources[key] = FILTER_SOURCE
            filters[(meta.namespace, meta.name)] = a.instance
        if problems:
            raise ConfigError(problems)
        return Config(resources=resources, sources=sources, filters=filters)

    def _line_of(self, source: str, key: tuple[str, str, str]) -> int:
        """The line of resource ``key``'s ``metadata.name`` in ``source`` (1 if not found):
        only a name clash needs it, so the text is read again rather than kept."""
        from meshfast.config.load import parse_text, read_paths

        if source == YAML_SOURCE and self._yaml is not None:
            docs = parse_text(self._yaml, source)[0]
        elif not source.startswith("<"):
            docs = read_paths([source])[0]
        else:
            return 1
        kind, namespace, name = key
        for doc in docs:
            data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
            meta = data.get("metadata")
            if not isinstance(meta, dict):
                continue
            if (
                data.get("kind") == kind
                and meta.get("name") == name
                and meta.get("namespace", self._settings.namespace) == namespace
            ):
                return doc.line_of("$.metadata.name")
        return 1

    # === filters ===

    @property
    def filters(self) -> Mapping[str, HttpFilter]:
        """The filters given to :meth:`add_filter`, by name (read-only)."""
        return MappingProxyType({name: a.instance for name, a in self._filters.items()})

    async def add_filter(
        self,
        http_filter: HttpFilter,
        /,
        *,
        hosts: str | Iterable[str] = (),
        route: str | None = None,
        failure_status: int = 500,
        phase_timeout: float = 1.0,
        name: str | None = None,
    ) -> str:
        """Attaches ``http_filter`` as an ``HttpFilter`` resource named ``name`` (default: its
        class name in kebab case, made unique) in this sidecar's namespace; returns the name.

        ``hosts`` (short names expand in the namespace; none or ``"*"``: every host) and
        ``route`` (a route name) limit where it runs; ``failure_status`` (400-599) answers a
        request whose filter raised or overran ``phase_timeout`` (seconds per phase, 0.001 to 600,
        as the resource's ``spec.timeout``).  Errors and logs name it ``namespace/name``.

        Before the sidecar starts, the filter is recorded; while it serves, the current config
        is compiled again with the filter and applied, and this returns once it is live.  It is
        one coroutine for both so that its meaning never depends on timing.  Raises
        ``TypeError``/``ValueError`` for bad arguments, ``ConfigError`` when a filter of the
        config has that name, ``RuntimeError`` once the sidecar is stopping.
        """
        if not isinstance(http_filter, HttpFilter):
            raise TypeError(
                f"add_filter takes an instance of a meshfast.filters.HttpFilter subclass,"
                f" not {type(http_filter).__name__}"
            )
        host_list = [hosts] if isinstance(hosts, str) else list(hosts)
        for h in host_list:
            if not isinstance(h, str) or not h.strip():
                raise ValueError(f"hosts must be non-empty strings, got {h!r}")
        if route is not None and not route:
            raise ValueError("route must not be empty (None: every route)")
        if name is not None:
            _check_name(name)
        if isinstance(phase_timeout, bool) or not isinstance(phase_timeout, int | float):
            raise TypeError(f"phase_timeout is seconds, got {type(phase_timeout).__name__}")
        if not 0.001 <= phase_timeout <= 600:
            raise ValueError(f"phase_timeout must be 0.001 to 600 seconds, got {phase_timeout!r}")
        timeout_text = f"{round(phase_timeout * 1000)}ms"

        def change(current: Mapping[str, _Attached]) -> tuple[dict[str, _Attached], str]:
            for other, a in current.items():
                if a.instance is http_filter:
                    raise ValueError(f"this filter is already attached, as {other!r}")
            chosen = name if name is not None else self._default_name(http_filter, current)
            if chosen in current:
                raise ValueError(f"a filter named {chosen!r} is already attached")
            namespace = self._settings.namespace
            resource = _resource(
                chosen, namespace, http_filter, host_list, route, failure_status, timeout_text
            )
            # Errors are counted and logged by this name: set before the config that uses it.
            http_filter.name = f"{namespace}/{chosen}"
            return {**current, chosen: _Attached(http_filter, resource)}, chosen

        before = http_filter.name
        try:
            return await self._change(change)
        except BaseException:
            http_filter.name = before
            raise

    async def remove_filter(self, name: str) -> None:
        """Detaches the filter named ``name`` (``KeyError`` if there is none); while the
        sidecar serves, returns once the config without it is live."""

        def change(current: Mapping[str, _Attached]) -> tuple[dict[str, _Attached], None]:
            if name not in current:
                raise KeyError(name)
            return {k: v for k, v in current.items() if k != name}, None

        await self._change(change)

    def _default_name(self, f: HttpFilter, current: Mapping[str, _Attached]) -> str:
        base = _kebab(type(f).__name__) or "filter"
        taken = set(current)
        config = self._control.config if self._control is not None else self._config
        if config is not None:
            taken.update(n for kind, _, n in config.sources if kind == "HttpFilter")
        chosen, i = base, 1
        while chosen in taken:
            i += 1
            chosen = f"{base}-{i}"
        return chosen

    async def _change(
        self,
        change: Callable[[Mapping[str, _Attached]], tuple[dict[str, _Attached], _T]],
    ) -> _T:
        """Replaces the filters by what ``change`` makes of them and, while serving, applies
        the config again with them; on any error the filters are what they were."""
        async with self._lock:
            await self._wait_settled()
            if self._state in ("stopping", "stopped") or self._stop_requested:
                raise RuntimeError("the sidecar is stopping: its filters cannot change")
            previous = self._filters
            attached, result = change(previous)
            self._filters = MappingProxyType(attached)
            try:
                if self._control is not None:
                    await self._control.reapply()
                else:
                    await trio.to_thread.run_sync(self._check, self._config)
            except BaseException:
                self._filters = previous
                raise
            return result

    async def _wait_settled(self) -> None:
        if self._state == "starting":
            await self._settled.wait()

    # === reload ===

    async def reload(self, config: Paths | None = None, *, yaml: str | None = None) -> int:
        """Replaces the whole config (files and/or YAML text, as in the constructor; neither:
        read the same ones again); the filters given to :meth:`add_filter` stay.

        Returns the version now serving (0 before the sidecar starts; unchanged when the
        config compiles to the one served, which is then not swapped in).  Raises
        ``ConfigError`` or the core's ``SnapshotError``/``CoreError``, and the old config keeps
        serving.
        """
        if config is None and yaml is None:
            paths, text = self._paths, self._yaml
        else:
            paths, text = _sources(config, yaml)
        async with self._lock:
            await self._wait_settled()
            if self._state in ("stopping", "stopped"):
                raise RuntimeError("the sidecar is stopping: it cannot reload")
            previous = self._paths, self._yaml
            # Set first: a clash with a filter of add_filter reads the text for its line.
            self._paths, self._yaml = paths, text
            try:
                if self._control is None:
                    loaded = await trio.to_thread.run_sync(self._load, paths, text)
                    self._config = await trio.to_thread.run_sync(self._check, loaded)
                    return 0
                return await self._control.apply_config(
                    lambda: self._load(paths, text), self._source_names()
                )
            except BaseException:
                self._paths, self._yaml = previous
                raise

    # === serving ===

    @property
    def state(self) -> State:
        return self._state

    async def serve(
        self, *, task_status: trio.TaskStatus[Ready] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Starts the core, binds the admin API, applies the config, reports the control
        layer's :class:`~meshfast.control.sidecar.Ready` and serves until :meth:`stop`; then
        drains (up to ``drain_timeout``) and returns.  For ``await nursery.start(car.serve)``.

        Raises before reporting ready if an address cannot be bound (``OSError``) or the core
        refuses the config; the core is then shut down.  A sidecar serves only once.
        """
        from meshfast import _core
        from meshfast.control.sidecar import Sidecar as Control

        if self._state != "new":
            raise RuntimeError(f"a Sidecar serves only once (it is {self._state})")
        self._state = "starting"
        try:
            deployment = await trio.to_thread.run_sync(self._deploy, self._config)
            core = await trio.to_thread.run_sync(lambda: _core.Core(workers=self._workers))
            try:
                control = Control(
                    core,
                    deployment.snapshot,
                    self._settings,
                    dns_plan=deployment.plan,
                    filters=deployment.dispatcher,
                    config=deployment.config,
                    prepare=self._prepare,
                )
            except BaseException:
                core.shutdown(0.0)
                raise
            self._control = control
            if self._stop_requested:
                control.request_shutdown()  # stop() came while starting: start, then drain
            await control.serve(task_status=_Started(self, task_status))
        finally:
            self._state = "stopped"
            self._settled.set()
            self._done.set()

    def _started(self, ready: Ready) -> None:
        self._ready = ready
        if self._state == "starting":
            self._state = "running"
        self._settled.set()

    async def stop(self) -> None:
        """Stops accepting, drains in-flight requests (up to ``drain_timeout``) and returns
        once :meth:`serve` has returned.  Idempotent; before the start, the sidecar will not
        start."""
        self._request_stop()
        if self._state == "new":
            self._state = "stopped"
            self._settled.set()
            self._done.set()
        await self._done.wait()

    def _request_stop(self) -> None:
        self._stop_requested = True
        if self._state in ("starting", "running"):
            self._state = "stopping"
        if self._control is not None:
            self._control.request_shutdown()

    async def __aenter__(self) -> Self:
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        try:
            await nursery.start(self.serve)
        except BaseException as exc:
            self._request_stop()
            await _exit(manager, exc)
            raise
        self._nursery_manager = manager
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._request_stop()
        manager, self._nursery_manager = self._nursery_manager, None
        if manager is None:
            return False
        await _exit(manager, exc)
        return False

    # === what it serves ===

    def _running(self) -> tuple[Control, Ready]:
        if self._control is None or self._ready is None:
            raise RuntimeError(
                "the sidecar has not started: use `async with` or `await nursery.start(car.serve)`"
            )
        return self._control, self._ready

    @property
    def outbound(self) -> str:
        """The outbound listener's bound ``host:port`` (requests routed by Host)."""
        return self._running()[1].outbound

    @property
    def url(self) -> str:
        """``http://`` + :attr:`outbound`: where to send requests (set their Host header)."""
        return f"http://{self.outbound}"

    @property
    def admin(self) -> str:
        """The admin API's bound ``host:port``."""
        return self._running()[1].admin

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    @property
    def listeners(self) -> dict[str, str]:
        """Every listener's bound address by name (``outbound``, ``inbound``, ...), as of
        the start."""
        return dict(self._running()[1].listeners)

    @property
    def version(self) -> int:
        """The version of the config now serving (1 at the start, + 1 per apply)."""
        return self._running()[0].version

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the config now serving came from: its files, ``<yaml>`` for ``yaml=`` text,
        ``<POST /config>`` after a reload through the admin API."""
        if self._control is not None:
            return self._control.sources
        return self._source_names()

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /stats``: per listener, route and cluster, and ``filters``
        (errors and timeouts per Python filter) when any were counted.  Read from the core."""
        control = self._running()[0]
        stats: dict[str, Any] = json.loads(control.core.stats_json())
        failures = failure_counts(control.filters)
        if failures:
            stats["filters"] = failures
        return stats


class _Started:
    """The ``task_status`` given to the control layer's ``serve``: records the addresses
    before the caller of ``nursery.start(car.serve)`` is told, so they can be read at once."""

    def __init__(self, car: Sidecar, outer: trio.TaskStatus[Ready]) -> None:
        self._car = car
        self._outer = outer

    def started(self, value: Ready | None = None) -> None:
        assert value is not None
        self._car._started(value)
        self._outer.started(value)


async def _exit(
    manager: AbstractAsyncContextManager[trio.Nursery], exc: BaseException | None
) -> None:
    """Leaves the nursery of ``async with``: an error that is alone in its exception group
    (the body's, or a start failure) comes out as itself, the way it went in."""
    try:
        if exc is None:
            await manager.__aexit__(None, None, None)
        else:
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
    except BaseExceptionGroup as group:
        single: BaseException = group
        while isinstance(single, BaseExceptionGroup) and len(single.exceptions) == 1:
            single = single.exceptions[0]
        if single is group:
            raise
        raise single from None


# === helpers ===


def _sources(config: Paths | None, yaml: str | None) -> tuple[tuple[str, ...], str | None]:
    if isinstance(config, str | os.PathLike):
        items: list[str | os.PathLike[str]] = [config]
    else:
        items = list(config or ())
    paths = tuple(os.fspath(p) for p in items)
    for p in paths:
        if "\n" in p:
            raise ValueError("config= takes file or folder paths; pass YAML text as yaml=")
    if yaml is not None and not isinstance(yaml, str):
        raise TypeError(f"yaml= takes YAML text (str), not {type(yaml).__name__}")
    return paths, yaml


def _check_address(what: str, address: str) -> None:
    try:
        parse_address(address)
    except ValueError:
        raise ValueError(f"{what}: expected HOST:PORT, not {address!r}") from None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise ValueError(f"a filter name is a non-empty resource name without '/', not {name!r}")


def _kebab(name: str) -> str:
    """``AddHeader`` → ``add-header``, ``HTTPLog`` → ``http-log``."""
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", name)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", text)
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


def _resource(
    name: str,
    namespace: str,
    f: HttpFilter,
    hosts: list[str],
    route: str | None,
    failure_status: int,
    timeout: str | None = None,
) -> r.HttpFilter:
    """The ``HttpFilter`` resource a YAML document would declare for ``f`` (its ``python`` is
    informative only: the instance is used as it is)."""
    cls = type(f)
    data = {
        "apiVersion": "meshfast.io/v1alpha1",
        "kind": "HttpFilter",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "python": f"{cls.__module__}:{cls.__qualname__}",
            "hosts": hosts,
            "route": route,
            "failureStatus": failure_status,
            "timeout": timeout,
        },
    }
    try:
        return msgspec.convert(data, r.HttpFilter)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.spec.failureStatus`", "failure_status")
        raise ValueError(message) from None
