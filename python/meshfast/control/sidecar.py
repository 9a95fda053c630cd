"""The sidecar: the Rust core, the snapshot it serves, and the admin API around them.

``meshfast run`` and ``meshfast demo`` both build a :class:`Sidecar` and run
:meth:`Sidecar.serve` under Trio. Life cycle::

    starting ──(admin bound, first snapshot applied)──► ready
    ready ──(SIGTERM/SIGINT, POST /quitquitquit, request_shutdown())──► draining
    draining ──(core.shutdown(drain_timeout) returned)──► stopped

The core is anything with :class:`CoreLike`'s methods: ``meshfast._core.Core`` in
production, a fake in the admin API's tests.

DNS endpoints (ServiceEntry ``resolution: DNS``/``DNS_ROUND_ROBIN``): the Sidecar keeps the
snapshot as compiled (hostname endpoints, :attr:`Sidecar.base_snapshot`) and serves it with
the names resolved by its :class:`~meshfast.control.resolver.Resolver`
(:attr:`Sidecar.snapshot`, what ``/config_dump`` shows).  Names are resolved before the first
apply, before each ``POST /config`` is applied (new names only), and every
``settings.dns_refresh`` seconds; a refresh that changes an address set re-applies the same
config with the version + 1.  Applies are serialized by one lock, so a refresh never races a
``POST /config``: it substitutes into whatever config is current when it applies.

Python filters (``HttpFilter`` resources): each config's filters become one
:class:`~meshfast.filters.dispatch.Dispatcher`, given to the core with
``set_filter_dispatcher`` right before the snapshot whose filter ids it matches (None for a
config without filters); if the core rejects the snapshot, the previous dispatcher is put
back.  A DNS re-apply keeps the current dispatcher.  Dispatchers run their ``async def``
phases on this Sidecar's Trio loop (:class:`~meshfast.filters.loop.TrioLoop`, bound once
:meth:`Sidecar.serve` runs); in-flight filter tasks finish during the drain.

Embedding (:class:`meshfast.Sidecar`): ``prepare`` is a function every config this Sidecar
loads passes through before it is compiled (the embedding API adds the filters it was given
as objects), and :meth:`Sidecar.reapply` compiles the current config again when what
``prepare`` adds has changed.  So ``POST /config`` keeps those filters too.

A start from the snapshot cache gives the Sidecar an :class:`EncodedSnapshot` (the bytes
the core already serves): it is decoded the first time something asks for it
(``/config_dump``, a reload), so an idle sidecar never imports msgspec or the IR types.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import trio

from meshfast.control.http import HttpServer, Limits, format_address, open_listeners
from meshfast.control.resolver import ResolveFn, Resolver
from meshfast.control.settings import SidecarSettings as SidecarSettings
from meshfast.control.settings import options_for

if TYPE_CHECKING:
    from meshfast._core import FilterDispatcher
    from meshfast.config import CompileOptions, Config, dns, ir
    from meshfast.filters.loop import TrioLoop

# The filter machinery (meshfast.filters.*) is imported only by configs that have
# filters: a sidecar without any never loads it (~0.8 MiB of its idle RSS).

# A config as loaded → the config to compile (see ``Sidecar(prepare=...)``).
Prepare = Callable[["Config"], "Config"]

__all__ = [
    "KEEP",
    "CoreLike",
    "EncodedSnapshot",
    "Prepare",
    "Ready",
    "Sidecar",
    "SidecarSettings",
    "State",
]


def trim_heap() -> bool:
    """Gives the C heap's free pages back (``_core.trim_memory``): a start or a config
    compile frees far more than it keeps, and glibc keeps freed pages mapped. False
    without the compiled core (tests of the control layer alone)."""
    try:
        from meshfast._core import trim_memory
    except ImportError:
        return False
    return trim_memory()


State = Literal["starting", "ready", "draining", "stopped"]


class CoreLike(Protocol):
    """The part of ``meshfast._core.Core`` the control layer uses."""

    def apply_snapshot(self, snapshot: bytes, /) -> int: ...
    def listeners(self) -> list[tuple[str, str]]: ...
    def stats_json(self) -> str: ...
    def stats_prometheus(self) -> str: ...
    def clusters_json(self) -> str: ...
    def set_filter_dispatcher(self, dispatcher: FilterDispatcher | None, /) -> None: ...
    def shutdown(self, drain_timeout: float = ..., /) -> None: ...


@dataclass(frozen=True, slots=True)
class Ready:
    """What :meth:`Sidecar.serve` reports once it serves (``task_status.started``)."""

    admin: str
    outbound: str
    listeners: tuple[tuple[str, str], ...]
    version: int

    def line(self) -> str:
        """The one line ``meshfast run`` prints on stdout."""
        return (
            f"meshfast ready admin={self.admin} outbound={self.outbound} "
            f"listeners={len(self.listeners)} version={self.version}"
        )


class EncodedSnapshot(NamedTuple):
    """A snapshot as IR bytes (the core serves it already), with the version the core gave it."""

    data: bytes
    version: int

    def decode(self) -> ir.Snapshot:
        from meshfast.config import ir

        return ir.decode(self.data)


class _Keep:
    """The type of :data:`KEEP`: apply a snapshot without changing the filter dispatcher."""


KEEP = _Keep()


class Sidecar:
    """Owns the core, the current snapshot and its sources; serves the admin API.

    ``core_errors`` are the exceptions ``core.apply_snapshot`` raises for a snapshot it
    rejects (``POST /config`` answers them with 400); by default the core's
    ``SnapshotError`` and ``CoreError``. ``limits`` bound the admin API's HTTP server.

    ``dns_plan`` says which services of ``snapshot`` are DNS ServiceEntry hosts
    (:func:`meshfast.config.dns.plan` of its config; None: none are, hostnames go to the core
    as they are); ``resolve`` replaces ``getaddrinfo`` (tests).
    """

    def __init__(
        self,
        core: CoreLike,
        snapshot: ir.Snapshot | EncodedSnapshot,
        settings: SidecarSettings | None = None,
        *,
        core_errors: tuple[type[Exception], ...] | None = None,
        limits: Limits | None = None,
        dns_plan: dns.DnsPlan | None = None,
        resolve: ResolveFn | None = None,
        applied: bool = False,
        filters: FilterDispatcher | None = None,
        config: Config | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        """``applied``: the caller already gave ``snapshot`` to the core (a config without
        DNS names can start serving before Trio is even imported), and ``filters``, the
        dispatcher of its config (:func:`~meshfast.filters.dispatch.build_dispatcher`), too.
        An :class:`EncodedSnapshot` must be applied already.

        ``config``: the config ``snapshot`` was compiled from, as loaded (before ``prepare``),
        so :meth:`reapply` can compile it again.  ``prepare``: every config loaded later
        (:meth:`apply_yaml`, :meth:`apply_config`, :meth:`reapply`) passes through it before it
        is compiled; it runs in a worker thread and may raise ``ConfigError``."""
        from meshfast.control.admin import AdminApi

        if core_errors is None:
            from meshfast.errors import core_errors as _core_errors

            core_errors = _core_errors()
        self.core = core
        self.settings = settings or SidecarSettings()
        self.core_errors = core_errors
        if isinstance(snapshot, EncodedSnapshot) and not applied:
            raise ValueError("an EncodedSnapshot must be applied to the core already")
        # The served snapshot, and the one as compiled (the same object without DNS names).
        self._snapshot: ir.Snapshot | EncodedSnapshot = snapshot
        self._base: ir.Snapshot | EncodedSnapshot = snapshot
        self._dns: dns.DnsPlan = dict(dns_plan or {})
        self.resolver = Resolver(resolve) if resolve is not None else Resolver()
        self._sources: tuple[str, ...] = self.settings.sources
        self._version = snapshot.version
        self._state: State = "starting"
        self._served = False
        self._core_stopped = False
        self._applied = applied
        self._filters = filters
        self._config = config
        self._prepare = prepare
        self._quit = trio.Event()
        self._apply_lock = trio.Lock()
        self._http = HttpServer(AdminApi(self), limits)
        self._nursery: trio.Nursery | None = None  # set while serving
        self._loop: TrioLoop | None = None  # async filter phases run here once serving
        self.admin_address: str | None = None

    # === state ===

    @property
    def state(self) -> State:
        return self._state

    @property
    def snapshot(self) -> ir.Snapshot:
        """The snapshot the core serves (or will serve, while starting)."""
        if isinstance(self._snapshot, EncodedSnapshot):
            self._decode()
        assert not isinstance(self._snapshot, EncodedSnapshot)
        return self._snapshot

    @property
    def base_snapshot(self) -> ir.Snapshot:
        """The snapshot as compiled: DNS endpoints still ``hostname:port``."""
        if isinstance(self._base, EncodedSnapshot):
            self._decode()
        assert not isinstance(self._base, EncodedSnapshot)
        return self._base

    def _decode(self) -> None:
        """Decodes a snapshot that came encoded (it has no DNS names: base and served are one)."""
        if isinstance(self._base, EncodedSnapshot):
            decoded = self._base.decode()
            if self._snapshot is self._base:
                self._snapshot = decoded
            self._base = decoded
        if isinstance(self._snapshot, EncodedSnapshot):
            self._snapshot = self._snapshot.decode()

    @property
    def version(self) -> int:
        return self._version

    @property
    def filters(self) -> FilterDispatcher | None:
        """The filter dispatcher of the current config (None: it has no HttpFilters)."""
        return self._filters

    @property
    def config(self) -> Config | None:
        """The config now serving, as loaded (before ``prepare``); None when it is not known
        (a compiled snapshot given to :meth:`apply`)."""
        return self._config

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the current config came from: file paths, or ``<POST /config>``."""
        return self._sources

    def request_shutdown(self) -> None:
        """Start draining: readiness fails, then the core drains and :meth:`serve` returns.

        Call it from Trio (the admin API, a signal, a test); it is idempotent.
        """
        self._quit.set()

    # === config ===

    def compile_options(self, version: int) -> CompileOptions:
        """The options every config of this sidecar is compiled with (start and reloads)."""
        return self.options_for(self.settings, version)

    @staticmethod
    def options_for(s: SidecarSettings, version: int) -> CompileOptions:
        return options_for(s, version)

    async def apply_yaml(self, text: str, *, source: str = "<POST /config>") -> int:
        """Loads, compiles and applies a whole new config; returns its version.

        Raises ``ConfigError`` (nothing applied) or one of ``core_errors`` (the core
        rejected the snapshot; the old one keeps serving).
        """
        from meshfast.config import load_config_text

        namespace = self.settings.namespace

        def load() -> Config:
            return load_config_text(text, source=source, namespace=namespace)

        return await self.apply_config(load, (source,))

    async def apply_config(self, load: Callable[[], Config], sources: Sequence[str]) -> int:
        """Like :meth:`apply_yaml`, for a config ``load`` returns (called in a worker thread:
        it may read files and import filter modules); ``sources`` say where it came from."""
        async with self._apply_lock:
            return await self._load_and_apply(load, tuple(sources))

    async def reapply(self) -> int:
        """Compiles the current :attr:`config` again, through ``prepare``, and applies it as a
        new version: what ``prepare`` adds has changed.  Raises like :meth:`apply_yaml`, and
        ``RuntimeError`` when the current config is not known."""
        async with self._apply_lock:
            config = self._config
            if config is None:
                raise RuntimeError("the config now serving is not known: it cannot be reapplied")
            return await self._load_and_apply(lambda: config, self._sources)

    async def _load_and_apply(self, load: Callable[[], Config], sources: tuple[str, ...]) -> int:
        from meshfast.config import compile_config

        options = self.compile_options(self._version + 1)
        prepare = self._prepare

        def build() -> tuple[Config, ir.Snapshot, dns.DnsPlan, FilterDispatcher | None]:
            loaded = load()
            config = loaded if prepare is None else prepare(loaded)
            snapshot = compile_config(config, options)
            from meshfast.config import dns, http_filter

            filters = None
            if http_filter.numbered(config.resources):
                from meshfast.filters.dispatch import build_dispatcher

                filters = build_dispatcher(config)
            return loaded, snapshot, dns.plan(config), filters

        loaded, snapshot, plan, filters = await trio.to_thread.run_sync(build)
        from meshfast.config import dns

        await self.resolver.refresh(dns.hostnames(snapshot, plan), only_new=True)
        version = await self._apply_locked(snapshot, sources, plan, filters=filters)
        self._config = loaded
        if self._state == "ready":
            # What loading and compiling freed (the start trims once it is ready). In a
            # worker thread, so the Trio loop goes on; the data plane's workers wait on an
            # arena's lock only while that arena is walked (a heap of a few MiB).
            await trio.to_thread.run_sync(trim_heap)
        return version

    async def apply(
        self,
        snapshot: ir.Snapshot,
        sources: Sequence[str],
        plan: dns.DnsPlan | None = None,
        *,
        filters: FilterDispatcher | _Keep | None = KEEP,
    ) -> int:
        """Applies an already compiled snapshot (DNS names resolved as known so far, with
        ``plan``: the DNS services of its config, default the current ones); returns its
        version.  ``filters``: the dispatcher of its config (default: keep the current one).
        The current :attr:`config` becomes unknown."""
        async with self._apply_lock:
            version = await self._apply_locked(snapshot, tuple(sources), plan, filters=filters)
            self._config = None
            return version

    async def _apply_locked(
        self,
        base: ir.Snapshot,
        sources: tuple[str, ...],
        plan: dns.DnsPlan | None = None,
        *,
        filters: FilterDispatcher | _Keep | None = KEEP,
    ) -> int:
        from meshfast.config import dns, ir

        plan = self._dns if plan is None else plan
        snapshot = dns.substitute(base, plan, self.resolver.addresses)
        encoded = ir.encode(snapshot)
        if isinstance(filters, _Keep) or (filters is None and self._filters is None):
            version = await trio.to_thread.run_sync(self.core.apply_snapshot, encoded)
        else:
            from meshfast.filters.dispatch import apply_with_filters

            self._bind(filters)
            version = await trio.to_thread.run_sync(
                apply_with_filters, self.core, encoded, filters, self._filters
            )
        if not isinstance(filters, _Keep):
            self._filters = filters
        self._snapshot, self._sources, self._version = snapshot, sources, version
        self._base, self._dns = base, plan
        return version

    def _bind(self, filters: FilterDispatcher | None) -> None:
        """Gives a dispatcher this sidecar's Trio loop (made on first need) for its async
        phases; before serving there is none and they fail, as without a loop."""
        if filters is None:
            return
        from meshfast.filters.dispatch import Dispatcher

        if not isinstance(filters, Dispatcher):
            return
        if self._loop is None and self._nursery is not None:
            from meshfast.filters.loop import TrioLoop

            self._loop = TrioLoop(self._nursery)
        filters.bind(self._loop)

    async def _dns_changed(self) -> None:
        """Re-applies the current config with fresh addresses, if they change the snapshot."""
        async with self._apply_lock:
            if self._state != "ready":
                return
            import msgspec

            from meshfast.config import dns

            resolved = dns.substitute(self.base_snapshot, self._dns, self.resolver.addresses)
            if resolved == msgspec.structs.replace(self.snapshot, version=resolved.version):
                return
            base = msgspec.structs.replace(self.base_snapshot, version=self._version + 1)
            try:
                await self._apply_locked(base, self._sources)
            except self.core_errors as exc:
                name = type(exc).__name__
                print(
                    f"meshfast: the core rejected the re-resolved snapshot ({name}): {exc}",
                    file=sys.stderr,
                    flush=True,
                )

    def _dns_names(self) -> set[str]:
        if not self._dns:
            return set()  # (an encoded snapshot stays encoded: it never has DNS names)
        from meshfast.config import dns

        return dns.hostnames(self.base_snapshot, self._dns)

    # === serving ===

    async def serve(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[Ready] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Binds the admin API, applies the snapshot, reports :class:`Ready`, serves
        until shut down, drains the core and returns.

        With ``handle_signals`` (main thread only), SIGTERM and SIGINT start the drain.
        If the admin address cannot be bound or the core rejects the first snapshot,
        the error propagates and the core is shut down.
        """
        if self._served:
            raise RuntimeError("a Sidecar serves only once")
        self._served = True
        try:
            try:
                listeners = await open_listeners(self.settings.admin)
            except OSError as exc:
                message = f"admin address {self.settings.admin}: {exc.strerror or exc}"
                raise OSError(exc.errno, message) from exc
            self.admin_address = format_address(listeners[0].socket.getsockname())
            error: Exception | None = None
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._bind(self._filters)
                if handle_signals:
                    await nursery.start(self._watch_signals)
                await nursery.start(self._http.serve, listeners)
                try:
                    ready = await self._start_core()
                except Exception as exc:
                    error = exc
                    nursery.cancel_scope.cancel()
                else:
                    self._state = "ready"
                    if self.settings.dns_refresh > 0:
                        nursery.start_soon(
                            self.resolver.watch,
                            self.settings.dns_refresh,
                            self._dns_names,
                            self._dns_changed,
                        )
                    task_status.started(ready)
                    # What the start freed (imports, a compile) goes back to the system.
                    await trio.to_thread.run_sync(trim_heap)
                    await self._quit.wait()
                    self._state = "draining"
                    await trio.to_thread.run_sync(self.core.shutdown, self.settings.drain_timeout)
                    self._core_stopped = True
                    nursery.cancel_scope.cancel()
            if error is not None:
                raise error
        finally:
            self._state = "stopped"
            self._nursery = None  # closed: a dispatcher bound later gets no loop
            if not self._core_stopped:
                self._core_stopped = True
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.core.shutdown, 0.0)

    async def _start_core(self) -> Ready:
        if self._applied and not self._dns:
            version = self._version
        else:
            await self.resolver.refresh(self._dns_names())
            async with self._apply_lock:
                version = await self._apply_locked(
                    self.base_snapshot, self._sources, filters=self._filters
                )
        bound = tuple(await trio.to_thread.run_sync(self.core.listeners))
        if self.settings.gateway:
            # A gateway has no outbound listener: report its first one (or "-").
            outbound_names = {x.name for x in self.snapshot.listeners[:1]}
            default = "-"
        elif isinstance(self._snapshot, EncodedSnapshot):
            # The compiler's name for the listener at --outbound (not decoded for this).
            outbound_names = {"outbound"}
            default = self.settings.outbound
        else:
            outbound_names = {
                listener.name
                for listener in self._snapshot.listeners
                if listener.address == self.settings.outbound
            }
            default = self.settings.outbound
        outbound = next((addr for name, addr in bound if name in outbound_names), default)
        assert self.admin_address is not None
        return Ready(self.admin_address, outbound, bound, version)

    async def _watch_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                # A second signal while draining changes nothing: the drain is bounded.
                self.request_shutdown()
