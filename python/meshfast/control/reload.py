"""Reloads: what the core serves now, and every change to it, one at a time.

A :class:`Reloader` holds the deployment the core serves (the snapshot as compiled and as
served, its DNS plan, its filter dispatcher, the config and sources it came from, its
version) and changes it under one apply lock, so a DNS refresh never races a
``POST /config``: it substitutes into whatever config is current when it applies.

- A new config (``POST /config``, the embedding API's ``reload``/``add_filter``) is deployed
  in a worker thread (:func:`meshfast.deploy.deploy`: load, ``prepare``, compile, filters),
  its new DNS names resolved, then installed with its dispatcher in one core call
  (:func:`meshfast.deploy.install`).  A ``ConfigError`` or a refused snapshot changes
  nothing: the core keeps the snapshot and dispatcher it had.
- DNS endpoints (ServiceEntry ``resolution: DNS``/``DNS_ROUND_ROBIN``): the compiled snapshot
  (hostname endpoints, :attr:`Reloader.base_snapshot`) is served with the names the
  :class:`~meshfast.control.resolver.Resolver` resolved (:attr:`Reloader.snapshot`).  A
  refresh that changes an address set re-applies the same config as the next version and
  keeps the dispatcher (``Core.apply_snapshot``).
- Dispatchers run their ``async def`` phases on the sidecar's Trio loop
  (:class:`~meshfast.filters.loop.TrioLoop`), made once the sidecar serves (:meth:`bind`).

A start from the snapshot cache gives an :class:`EncodedSnapshot` (the bytes the core serves
already): decoded the first time something asks for it (``/config_dump``, a reload), so an
idle sidecar never imports msgspec or the IR types.

The life cycle (start, ready, signals, drain) is :mod:`meshfast.control.sidecar`'s; it tells
the reloader when it is :attr:`~Reloader.live`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import trio

from meshfast.control.heap import trim_heap
from meshfast.control.resolver import Resolver
from meshfast.control.settings import SidecarSettings, options_for

if TYPE_CHECKING:
    from meshfast._core import FilterDispatcher
    from meshfast.config import CompileOptions, Config, dns, ir
    from meshfast.deploy import Deployment, Installer, Prepare
    from meshfast.filters.loop import TrioLoop

__all__ = ["KEEP", "EncodedSnapshot", "Reloader"]


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


class Reloader:
    """The deployment ``core`` serves, and the apply lock every change to it takes.

    ``snapshot``: what the core serves (``applied``: already) or will serve once
    :meth:`start` ran, with ``dns_plan`` (its DNS services; None: none) and ``dispatcher``
    (its filters).  ``config``: the config it was compiled from, as loaded; ``prepare``: what
    every config loaded later passes through before it is compiled.  ``core_errors``: what
    the core raises for a snapshot it refuses (a DNS re-apply logs them).
    """

    def __init__(
        self,
        core: Installer,
        snapshot: ir.Snapshot | EncodedSnapshot,
        settings: SidecarSettings,
        *,
        core_errors: tuple[type[Exception], ...],
        resolver: Resolver,
        dns_plan: dns.DnsPlan | None = None,
        applied: bool = False,
        dispatcher: FilterDispatcher | None = None,
        config: Config | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        if isinstance(snapshot, EncodedSnapshot) and not applied:
            raise ValueError("an EncodedSnapshot must be applied to the core already")
        self.core = core
        self.settings = settings
        self.core_errors = core_errors
        self.resolver = resolver
        # The served snapshot, and the one as compiled (the same object without DNS names).
        self._served: ir.Snapshot | EncodedSnapshot = snapshot
        self._base: ir.Snapshot | EncodedSnapshot = snapshot
        self._dns: dns.DnsPlan = dict(dns_plan or {})
        self._sources: tuple[str, ...] = settings.sources
        self._version = snapshot.version
        self._applied = applied
        self._dispatcher = dispatcher
        self._config = config
        self._prepare = prepare
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None  # set while serving
        self._loop: TrioLoop | None = None  # async filter phases run here once serving
        # Set by the sidecar while it is ready: loads trim the heap after, DNS refreshes apply.
        self.live = False
        # Configs loaded (POST /config, SIGHUP, --watch, the embedding API): swapped in,
        # compiled to what the core serves already (not swapped), refused (nothing changed).
        self.applied = 0
        self.unchanged = 0
        self.refused = 0

    # === what is served ===

    @property
    def snapshot(self) -> ir.Snapshot:
        """The snapshot the core serves (or will serve, while starting)."""
        if isinstance(self._served, EncodedSnapshot):
            self._decode()
        assert not isinstance(self._served, EncodedSnapshot)
        return self._served

    @property
    def base_snapshot(self) -> ir.Snapshot:
        """The snapshot as compiled: DNS endpoints still ``hostname:port``."""
        if isinstance(self._base, EncodedSnapshot):
            self._decode()
        assert not isinstance(self._base, EncodedSnapshot)
        return self._base

    @property
    def encoded(self) -> bool:
        """Whether the served snapshot is still the bytes a cached start gave (not decoded)."""
        return isinstance(self._served, EncodedSnapshot)

    def _decode(self) -> None:
        """Decodes a snapshot that came encoded (it has no DNS names: base and served are one)."""
        if isinstance(self._base, EncodedSnapshot):
            decoded = self._base.decode()
            if self._served is self._base:
                self._served = decoded
            self._base = decoded
        if isinstance(self._served, EncodedSnapshot):
            self._served = self._served.decode()

    @property
    def version(self) -> int:
        return self._version

    @property
    def dispatcher(self) -> FilterDispatcher | None:
        """The filter dispatcher of the current config (None: it has no HttpFilters)."""
        return self._dispatcher

    @property
    def config(self) -> Config | None:
        """The config now serving, as loaded (before ``prepare``); None when it is not known."""
        return self._config

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the current config came from: file paths, or ``<POST /config>``."""
        return self._sources

    def options(self, version: int) -> CompileOptions:
        """The options every config is compiled with (start and reloads)."""
        return options_for(self.settings, version)

    # === changes ===

    async def start(self) -> int:
        """The first apply: resolves the DNS names, then gives the core the snapshot and its
        dispatcher; nothing to do when the caller applied it already and it has no names."""
        if self._applied and not self._dns:
            return self._version
        await self.resolver.refresh(self.dns_names())
        async with self._lock:
            return await self._install_locked(
                self.base_snapshot, self._sources, None, self._dispatcher
            )

    async def apply_yaml(self, text: str, *, source: str = "<POST /config>") -> int:
        """Loads, compiles and applies a whole new config; returns its version.

        Raises ``ConfigError`` (nothing applied) or one of ``core_errors`` (the core
        refused the snapshot; the old one keeps serving, with its filters).
        """
        from meshfast.deploy import Sources

        return await self.apply_config(
            Sources.text(text, source, namespace=self.settings.namespace).load, (source,)
        )

    async def apply_config(self, load: Callable[[], Config], sources: Sequence[str]) -> int:
        """Like :meth:`apply_yaml`, for a config ``load`` returns (called in a worker thread:
        it may read files and import filter modules); ``sources`` say where it came from."""
        async with self._lock:
            return await self._deploy_locked(load, tuple(sources))

    async def apply_files(self, paths: Sequence[str]) -> int:
        """Loads the config files (and folders) ``paths`` again and applies them, as
        :meth:`apply_config` (SIGHUP, ``--watch``).  Raises like it, and ``OSError`` for a
        path that cannot be read."""
        from meshfast.deploy import Sources

        sources = Sources(tuple(paths), namespace=self.settings.namespace)
        return await self.apply_config(sources.load, sources.names)

    async def reapply(self) -> int:
        """Compiles the current :attr:`config` again, through ``prepare``, and applies it as a
        new version: what ``prepare`` adds has changed.  Raises like :meth:`apply_yaml`, and
        ``RuntimeError`` when the current config is not known."""
        async with self._lock:
            config = self._config
            if config is None:
                raise RuntimeError("the config now serving is not known: it cannot be reapplied")
            return await self._deploy_locked(lambda: config, self._sources)

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
        async with self._lock:
            version = await self._install_locked(snapshot, tuple(sources), plan, filters)
            self._config = None
            return version

    def counts(self) -> dict[str, int]:
        """The config loads so far, by outcome (``/stats``' ``reloads``)."""
        return {"applied": self.applied, "unchanged": self.unchanged, "refused": self.refused}

    async def _deploy_locked(self, load: Callable[[], Config], sources: tuple[str, ...]) -> int:
        try:
            version = await self._deploy_once(load, sources)
        except Exception:
            self.refused += 1
            raise
        return version

    async def _deploy_once(self, load: Callable[[], Config], sources: tuple[str, ...]) -> int:
        from meshfast.config import dns
        from meshfast.deploy import deploy

        options = self.options(self._version + 1)
        prepare = self._prepare

        def build() -> Deployment:
            return deploy(load(), options, prepare=prepare)

        deployment = await trio.to_thread.run_sync(build)
        if self._serves(deployment):
            # The same compiled config: no swap, no new version, nothing reset (the core
            # would keep endpoint state and pools anyway; this also keeps the balancers'
            # positions, the filter-free dispatcher and the version clients see).
            self._config, self._sources = deployment.config, sources
            self.unchanged += 1
            return self._version
        await self.resolver.refresh(
            dns.hostnames(deployment.snapshot, deployment.plan), only_new=True
        )
        version = await self._install_locked(
            deployment.snapshot, sources, deployment.plan, deployment.dispatcher, deployment.data
        )
        self._config = deployment.config
        self.applied += 1
        if self.live:
            # What loading and compiling freed (the start trims once it is ready). In a
            # worker thread, so the Trio loop goes on; the data plane's workers wait on an
            # arena's lock only while that arena is walked (a heap of a few MiB).
            await trio.to_thread.run_sync(trim_heap)
        return version

    def _serves(self, deployment: Deployment) -> bool:
        """Whether the core serves ``deployment`` already: the same IR (but for the version)
        and DNS plan, no filters on either side and no certificate files.  A filter's code,
        or the PEM file behind a path, may have changed while the config has not: such a
        config is always installed again (a reload is how rotated certificates are read)."""
        if not self._applied or deployment.dispatcher is not None or self._dispatcher is not None:
            return False
        if deployment.plan != self._dns or _reads_files(deployment.snapshot):
            return False
        import msgspec

        base = self.base_snapshot
        return msgspec.structs.replace(deployment.snapshot, version=base.version) == base

    async def _install_locked(
        self,
        base: ir.Snapshot,
        sources: tuple[str, ...],
        plan: dns.DnsPlan | None,
        filters: FilterDispatcher | _Keep | None,
        data: bytes | None = None,
    ) -> int:
        """Serves ``base`` (``data``: its bytes, when known) with the DNS names of ``plan``
        resolved, and ``filters`` (:data:`KEEP`: the current dispatcher) in one core call."""
        from meshfast.config import dns, ir
        from meshfast.deploy import install

        plan = self._dns if plan is None else plan
        snapshot = dns.substitute(base, plan, self.resolver.addresses)
        encoded = data if data is not None and snapshot is base else ir.encode(snapshot)
        if isinstance(filters, _Keep):
            version = await trio.to_thread.run_sync(self.core.apply_snapshot, encoded)
        else:
            # What the core serves now (nothing before the first apply).
            previous = self._dispatcher if self._applied else None
            self._bind(filters)
            version = await trio.to_thread.run_sync(install, self.core, encoded, filters, previous)
            self._dispatcher = filters
        self._applied = True
        self._served, self._sources, self._version = snapshot, sources, version
        self._base, self._dns = base, plan
        return version

    # === the Trio loop of async filter phases ===

    def bind(self, nursery: trio.Nursery | None) -> None:
        """Async filter phases run in ``nursery`` from now on (None: the sidecar stopped, a
        dispatcher installed later gets no loop); binds the current dispatcher."""
        self._nursery = nursery
        if nursery is not None:
            self._bind(self._dispatcher)

    def _bind(self, filters: FilterDispatcher | None) -> None:
        """Gives a dispatcher the sidecar's Trio loop (made on first need) for its async
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

    # === DNS ===

    def dns_names(self) -> set[str]:
        """The hostnames the current config's DNS services need resolved."""
        if not self._dns:
            return set()  # (an encoded snapshot stays encoded: it never has DNS names)
        from meshfast.config import dns

        return dns.hostnames(self.base_snapshot, self._dns)

    async def dns_changed(self) -> None:
        """Re-applies the current config with fresh addresses, if they change the snapshot."""
        async with self._lock:
            if not self.live:
                return
            import msgspec

            from meshfast.config import dns

            resolved = dns.substitute(self.base_snapshot, self._dns, self.resolver.addresses)
            if resolved == msgspec.structs.replace(self.snapshot, version=resolved.version):
                return
            base = msgspec.structs.replace(self.base_snapshot, version=self._version + 1)
            try:
                await self._install_locked(base, self._sources, None, KEEP)
            except self.core_errors as exc:
                name = type(exc).__name__
                print(
                    f"meshfast: the core rejected the re-resolved snapshot ({name}): {exc}",
                    file=sys.stderr,
                    flush=True,
                )


def _reads_files(snapshot: ir.Snapshot) -> bool:
    """Whether the core reads files to serve ``snapshot`` (TLS certificates and keys)."""
    return any(x.tls is not None for x in snapshot.listeners) or any(
        c.tls is not None for c in snapshot.clusters
    )
