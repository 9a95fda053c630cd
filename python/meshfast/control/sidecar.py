"""The sidecar's life cycle: the Rust core, the admin API around it, signals and the drain.

``meshfast run``, ``meshfast demo`` and the embedding API build a :class:`Sidecar` and run
:meth:`Sidecar.serve` under Trio. Life cycle::

    starting ──(admin bound, first snapshot applied)──► ready
    ready ──(SIGTERM/SIGINT, POST /quitquitquit, request_shutdown())──► draining
    draining ──(core.shutdown(drain_timeout) returned)──► stopped

While ready, SIGHUP (with ``handle_signals``) and, with ``settings.watch``, a change to a
config file load the config files again (:meth:`Sidecar.reload_files`); a config that does
not load keeps the running one and is logged on stderr, every problem at FILE:LINE.

The core is anything with :class:`CoreLike`'s methods: ``meshfast._core.Core`` in
production, a fake in the admin API's tests.

What the core serves and every change to it (``POST /config``, the embedding API's reloads,
DNS refreshes, the filter dispatcher) belong to the sidecar's
:class:`~meshfast.control.reload.Reloader` (:attr:`Sidecar.reloader`); the Sidecar's
``apply_*`` methods and state properties hand over to it.  A config becomes what the core
serves through :mod:`meshfast.deploy`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import trio

from meshfast.control.heap import trim_heap as trim_heap
from meshfast.control.http import HttpServer, Limits, format_address, open_listeners
from meshfast.control.reload import KEEP, EncodedSnapshot, Reloader, _Keep
from meshfast.control.resolver import ResolveFn, Resolver
from meshfast.control.settings import SidecarSettings as SidecarSettings
from meshfast.control.settings import options_for
from meshfast.deploy import Prepare

if TYPE_CHECKING:
    from meshfast._core import FilterDispatcher
    from meshfast.config import CompileOptions, Config, dns, ir

# The filter machinery (meshfast.filters.*) is imported only by configs that have
# filters: a sidecar without any never loads it (~0.8 MiB of its idle RSS).

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


State = Literal["starting", "ready", "draining", "stopped"]


class CoreLike(Protocol):
    """The part of ``meshfast._core.Core`` the control layer uses."""

    def apply_snapshot(self, snapshot: bytes, /) -> int: ...
    def install(self, snapshot: bytes, dispatcher: FilterDispatcher | None, /) -> int: ...
    def protect(self, address: str, /) -> None: ...
    def listeners(self) -> list[tuple[str, str]]: ...
    def stats_json(self) -> str: ...
    def stats_prometheus(self) -> str: ...
    def clusters_json(self) -> str: ...
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


class Sidecar:
    """Owns the core's life cycle and serves the admin API; its :attr:`reloader` owns what
    the core serves.

    ``core_errors`` are the exceptions the core raises for a snapshot it refuses
    (``POST /config`` answers them with 400); by default the core's ``SnapshotError`` and
    ``CoreError``. ``limits`` bound the admin API's HTTP server.

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
        tasks: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        """``applied``: the caller already gave ``snapshot`` to the core (a config without
        DNS names can start serving before Trio is even imported), and ``filters``, the
        dispatcher of its config (:attr:`meshfast.deploy.Deployment.dispatcher`), too.
        An :class:`EncodedSnapshot` must be applied already.

        ``config``: the config ``snapshot`` was compiled from, as loaded (before ``prepare``),
        so :meth:`reapply` can compile it again.  ``prepare``: every config loaded later
        (:meth:`apply_yaml`, :meth:`apply_config`, :meth:`reapply`) passes through it before it
        is compiled; it runs in a worker thread and may raise ``ConfigError``.  ``tasks``
        run beside the admin API once the sidecar is ready, until it stops (the span
        exporter)."""
        from meshfast.control.admin import AdminApi

        if core_errors is None:
            from meshfast.errors import core_errors as _core_errors

            core_errors = _core_errors()
        self.core = core
        self.settings = settings or SidecarSettings()
        self.core_errors = core_errors
        self.reloader = Reloader(
            core,
            snapshot,
            self.settings,
            core_errors=core_errors,
            resolver=Resolver(resolve) if resolve is not None else Resolver(),
            dns_plan=dns_plan,
            applied=applied,
            dispatcher=filters,
            config=config,
            prepare=prepare,
        )
        self._state: State = "starting"
        self._served = False
        self._core_stopped = False
        self._quit = trio.Event()
        # SIGHUPs not yet acted on: one is enough (a burst of them is one reload).
        self._hups_in, self._hups = trio.open_memory_channel[None](1)
        self._http = HttpServer(AdminApi(self), limits)
        self.admin_address: str | None = None
        self._tasks = tuple(tasks)

    # === state ===

    @property
    def state(self) -> State:
        return self._state

    @property
    def resolver(self) -> Resolver:
        return self.reloader.resolver

    @property
    def snapshot(self) -> ir.Snapshot:
        """The snapshot the core serves (or will serve, while starting)."""
        return self.reloader.snapshot

    @property
    def base_snapshot(self) -> ir.Snapshot:
        """The snapshot as compiled: DNS endpoints still ``hostname:port``."""
        return self.reloader.base_snapshot

    @property
    def version(self) -> int:
        return self.reloader.version

    @property
    def filters(self) -> FilterDispatcher | None:
        """The filter dispatcher of the current config (None: it has no HttpFilters)."""
        return self.reloader.dispatcher

    @property
    def config(self) -> Config | None:
        """The config now serving, as loaded (before ``prepare``); None when it is not known
        (a compiled snapshot given to :meth:`apply`)."""
        return self.reloader.config

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the current config came from: file paths, or ``<POST /config>``."""
        return self.reloader.sources

    def request_shutdown(self) -> None:
        """Start draining: readiness fails, then the core drains and :meth:`serve` returns.

        Call it from Trio (the admin API, a signal, a test); it is idempotent.
        """
        self._quit.set()

    # === config (the reloader's) ===

    def compile_options(self, version: int) -> CompileOptions:
        """The options every config of this sidecar is compiled with (start and reloads)."""
        return self.reloader.options(version)

    @staticmethod
    def options_for(s: SidecarSettings, version: int) -> CompileOptions:
        return options_for(s, version)

    async def apply_yaml(self, text: str, *, source: str = "<POST /config>") -> int:
        """:meth:`Reloader.apply_yaml <meshfast.control.reload.Reloader.apply_yaml>`."""
        return await self.reloader.apply_yaml(text, source=source)

    async def apply_config(self, load: Callable[[], Config], sources: Sequence[str]) -> int:
        """:meth:`Reloader.apply_config <meshfast.control.reload.Reloader.apply_config>`."""
        return await self.reloader.apply_config(load, sources)

    async def reapply(self) -> int:
        """:meth:`Reloader.reapply <meshfast.control.reload.Reloader.reapply>`."""
        return await self.reloader.reapply()

    async def apply(
        self,
        snapshot: ir.Snapshot,
        sources: Sequence[str],
        plan: dns.DnsPlan | None = None,
        *,
        filters: FilterDispatcher | _Keep | None = KEEP,
    ) -> int:
        """:meth:`Reloader.apply <meshfast.control.reload.Reloader.apply>`."""
        return await self.reloader.apply(snapshot, sources, plan, filters=filters)

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
            # No original destination may lead a request into the admin API.
            for listener in listeners:
                self.core.protect(format_address(listener.socket.getsockname()))
            error: Exception | None = None
            async with trio.open_nursery() as nursery:
                self.reloader.bind(nursery)
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
                    self.reloader.live = True
                    if self.settings.dns_refresh > 0:
                        nursery.start_soon(
                            self.resolver.watch,
                            self.settings.dns_refresh,
                            self.reloader.dns_names,
                            self.reloader.dns_changed,
                        )
                    nursery.start_soon(self._reload_on_hup)
                    if self.settings.certs is not None:
                        from meshfast.control.watch import watch

                        identity = self.settings.certs
                        files = [identity.cert_chain, identity.private_key, identity.root_cert]
                        await nursery.start(partial(watch, files, self.rotate_certs))
                        if self.settings.ca is not None:
                            nursery.start_soon(self._keep_renewed, self.settings.ca)
                    if self.settings.watch and self.settings.sources:
                        from meshfast.control.watch import watch

                        await nursery.start(
                            partial(
                                watch,
                                self.settings.sources,
                                partial(self.reload_files, "watch"),
                                since_ns=self.settings.read_at_ns,
                            )
                        )
                    for task in self._tasks:
                        nursery.start_soon(task)
                    task_status.started(ready)
                    # What the start freed (imports, a compile) goes back to the system.
                    await trio.to_thread.run_sync(trim_heap)
                    await self._quit.wait()
                    self._state = "draining"
                    self.reloader.live = False
                    await trio.to_thread.run_sync(self.core.shutdown, self.settings.drain_timeout)
                    self._core_stopped = True
                    nursery.cancel_scope.cancel()
            if error is not None:
                raise error
        finally:
            self._state = "stopped"
            self.reloader.live = False
            self.reloader.bind(None)  # closed: a dispatcher installed later gets no loop
            if not self._core_stopped:
                self._core_stopped = True
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.core.shutdown, 0.0)

    async def _start_core(self) -> Ready:
        version = await self.reloader.start()
        bound = tuple(await trio.to_thread.run_sync(self.core.listeners))
        if self.settings.gateway:
            # A gateway has no outbound listener: report its first one (or "-").
            outbound_names = {x.name for x in self.snapshot.listeners[:1]}
            default = "-"
        elif self.reloader.encoded:
            # The compiler's name for the listener at --outbound (not decoded for this).
            outbound_names = {"outbound"}
            default = self.settings.outbound
        else:
            outbound_names = {
                listener.name
                for listener in self.reloader.snapshot.listeners
                if listener.address == self.settings.outbound
            }
            default = self.settings.outbound
        outbound = next((addr for name, addr in bound if name in outbound_names), default)
        assert self.admin_address is not None
        return Ready(self.admin_address, outbound, bound, version)

    async def _watch_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    # WouldBlock: a reload is pending already; it reads the files as they are.
                    with contextlib.suppress(trio.WouldBlock):
                        self._hups_in.send_nowait(None)
                    continue
                # A second signal while draining changes nothing: the drain is bounded.
                self.request_shutdown()

    async def _reload_on_hup(self) -> None:
        async for _ in self._hups:
            await self.reload_files("SIGHUP")

    async def rotate_certs(self) -> int | None:
        """The ``--certs`` files changed (rotated, renewed): the config is applied again, so
        new handshakes present and trust what the files hold now; connections already open
        keep the certificates they were made with.  Files that do not make an identity
        (half-written, a key that does not match) are logged and the running ones kept."""
        from meshfast.security.identity import load_identity

        assert self.settings.certs is not None
        folder = Path(self.settings.certs.cert_chain).parent
        try:
            identity = await trio.to_thread.run_sync(load_identity, folder)
        except (OSError, ValueError) as exc:
            _log(f"certificates in {folder} not taken: {exc}; the running ones keep serving")
            return None
        if self.settings.sources:
            version = await self.reload_files("certificates")
        else:
            try:
                version = await self.reloader.reapply()
            except Exception as exc:  # a rotation in the background must never end the sidecar
                _log(f"certificates: not applied ({type(exc).__name__}: {exc})")
                return None
        if version is not None:
            _log(f"certificates: {identity.identity} from {folder} serves new handshakes")
        return version

    async def _keep_renewed(self, ca: str) -> None:
        """``--ca``: the ``--certs`` certificate is issued again at half its lifetime (the
        watch on the files then serves it); a failure is logged and tried again later."""
        from meshfast.security import renew

        assert self.settings.certs is not None
        folder = Path(self.settings.certs.cert_chain).parent
        while True:
            try:
                delay = await trio.to_thread.run_sync(renew.due_in, folder)
                if delay <= 0:
                    issued = await trio.to_thread.run_sync(renew.renew, Path(ca), folder)
                    until = f"{issued.not_after:%Y-%m-%d %H:%M:%S} UTC"
                    _log(f"certificates: {issued.identity} renewed by {ca}, valid until {until}")
                    # A certificate so short-lived that it is due again at once (its
                    # validity starts backdated) is not renewed in a tight loop.
                    delay = RENEW_RETRY_S
            except (OSError, ValueError) as exc:
                _log(f"certificates: renewal by {ca} failed ({exc}); trying again in a minute")
                delay = RENEW_RETRY_S
            await trio.sleep(min(delay, RENEW_RETRY_S * 60))

    async def reload_files(self, why: str = "reload") -> int | None:
        """Loads the config files this sidecar started from (``settings.sources``) again
        and applies them; returns the version now served, or None when the config was
        refused (then the running one keeps serving).  Logs the outcome on stderr: a
        refused config with every problem, each at FILE:LINE."""
        from meshfast.config import ConfigError

        paths = self.settings.sources
        if not paths:
            _log(f"{why}: no config files to reload (the config did not come from files)")
            return None
        before = self.version
        try:
            version = await self.reloader.apply_files(paths)
        except ConfigError as exc:
            _log(f"{why}: config refused, version {before} keeps serving; problems:")
            for problem in exc.problems:
                print(problem, file=sys.stderr, flush=True)
            return None
        except OSError as exc:
            _log(
                f"{why}: cannot read {exc.filename or paths}: {exc.strerror or exc}; "
                f"version {before} keeps serving"
            )
            return None
        except self.core_errors as exc:
            _log(
                f"{why}: the core refused the config ({type(exc).__name__}): {exc}; "
                f"version {before} keeps serving"
            )
            return None
        except Exception as exc:  # a reload in the background must never end the sidecar
            _log(f"{why}: failed ({type(exc).__name__}: {exc}); version {before} keeps serving")
            return None
        if version == before:
            _log(f"{why}: config unchanged, version {version} keeps serving (nothing reset)")
        else:
            _log(f"{why}: version {version} serving (was {before})")
        return version


# A failed renewal is tried again this often; a due date far away is looked at again at
# least hourly (the clock may have jumped).
RENEW_RETRY_S = 60.0


def _log(message: str) -> None:
    print(f"meshfast: {message}", file=sys.stderr, flush=True)
