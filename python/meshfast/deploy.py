"""Deploying a config: its sources → what the core serves → the core serving it.

Every way a config reaches the core goes through here: ``meshfast run`` (its files),
``meshfast validate`` (the same, without a core), ``meshfast demo`` (YAML text), the embedding
API (files and text, and configs it adds filters to) and ``POST /config`` (the control
layer's :mod:`~meshfast.control.reload`).  Two steps, because the control layer does
something between them (resolve DNS names, under its apply lock):

1. :func:`deploy`: load (:class:`Sources`, or an already loaded ``Config``), pass through the
   caller's ``prepare``, build the filters, compile → a :class:`Deployment` (the IR snapshot
   and its bytes, the DNS plan, the filter dispatcher or None).  Pure: no core, no Trio, so
   ``meshfast run`` does it before Trio is imported, and reloads in a worker thread.
2. :func:`install`: one call into the core, ``Core.install(bytes, dispatcher)``, which swaps
   the snapshot and the dispatcher whose filter ids it serves in atomically (a refused
   snapshot changes nothing, so there is nothing to roll back here).

This module sits between the control layer and the two packages it joins: the config
pipeline (``meshfast.config``, which never imports the filter machinery: it is handed
:func:`load_filter`) and the filters (``meshfast.filters``).  It is not in ``control/``
because it needs neither Trio nor a running sidecar, and the entry points use it directly.
Importing it is cheap: a start from the snapshot cache never runs it, and may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from meshfast._core import FilterDispatcher
    from meshfast.config import CompileOptions, Config, ir, resources
    from meshfast.config.dns import DnsPlan
    from meshfast.filters.dispatch import Dispatcher

__all__ = [
    "Deployment",
    "Installer",
    "Prepare",
    "Sources",
    "deploy",
    "install",
    "load",
    "load_filter",
]

# A config as loaded → the config to compile (the embedding API adds its filters).
Prepare = Callable[["Config"], "Config"]


class Installer(Protocol):
    """What :func:`install` needs of ``meshfast._core.Core``."""

    def apply_snapshot(self, snapshot: bytes, /) -> int: ...
    def install(self, snapshot: bytes, dispatcher: FilterDispatcher | None, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Sources:
    """Where a config is read from: files and folders, then YAML texts (each with the name
    its problems are reported under, ``<yaml>``, ``<POST /config>``), in one namespace."""

    paths: tuple[str, ...] = ()
    texts: tuple[tuple[str, str], ...] = ()  # (YAML text, source name)
    namespace: str = "default"

    @classmethod
    def text(cls, text: str, source: str, *, namespace: str = "default") -> Sources:
        return cls(texts=((text, source),), namespace=namespace)

    @property
    def names(self) -> tuple[str, ...]:
        """The sources as ``config_dump`` and the ready state name them."""
        return (*self.paths, *(name for _, name in self.texts))

    def load(self) -> Config:
        """Reads and validates the config, its filters built (:func:`load`)."""
        return load(self.paths, texts=self.texts, namespace=self.namespace)


def load_filter(
    resource: resources.HttpFilter, source: str, /
) -> tuple[Any, list[tuple[str, str]]]:
    """The config pipeline's ``FilterLoader``: the filter registry's, imported only when a
    config has an HttpFilter (a sidecar without filters never loads their machinery)."""
    from meshfast.filters.registry import load_resource

    return load_resource(resource, source)


def load(
    paths: Sequence[str], *, texts: Sequence[tuple[str, str]] = (), namespace: str = "default"
) -> Config:
    """``load_config`` with the filters built: every problem, the filters' included (a module
    that does not import, a bad ``spec.config``), at its file and line.  Raises
    ``ConfigError``, or ``OSError`` only for what the loader does not report itself."""
    from meshfast.config import load_config

    return load_config(paths, namespace=namespace, texts=texts, load_filter=load_filter)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the core serves for one config, before DNS names are resolved.

    ``snapshot`` is the IR as compiled (DNS endpoints still ``hostname:port``) and ``data``
    its bytes: what the core is given as they are when ``plan`` is empty.  ``dispatcher``
    runs the config's filters (None: it has none).  ``config`` is the config as loaded,
    before ``prepare``: what a later re-deploy starts from."""

    config: Config
    snapshot: ir.Snapshot
    data: bytes
    plan: DnsPlan
    dispatcher: Dispatcher | None

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def cacheable(self) -> bool:
        """Whether the bytes alone can serve it at a later start (the snapshot cache): no
        filter modules to import, no names to resolve."""
        return not self.plan and self.dispatcher is None


def deploy(
    source: Sources | Config, options: CompileOptions, *, prepare: Prepare | None = None
) -> Deployment:
    """Loads (``source``: :class:`Sources`, or a config already loaded), prepares, compiles
    with ``options`` (its ``version`` is the deployment's) and builds the filter dispatcher.

    Raises ``ConfigError`` with every problem (nothing is served yet, so nothing changes);
    may raise ``OSError`` for unreadable sources.  May import filter modules: run it in a
    worker thread from Trio."""
    from meshfast.config import compile_config, dns, http_filter, ir

    loaded = source.load() if isinstance(source, Sources) else source
    config = loaded if prepare is None else prepare(loaded)
    dispatcher = None
    if http_filter.numbered(config.resources):  # (the filter machinery only when needed)
        from meshfast.filters import registry
        from meshfast.filters.dispatch import build_dispatcher

        # Instances first: the compiler reads the body limits their classes declare.
        config = registry.load_missing(config)
        snapshot = compile_config(config, options)
        dispatcher = build_dispatcher(config)
    else:
        snapshot = compile_config(config, options)
    return Deployment(loaded, snapshot, ir.encode(snapshot), dns.plan(config), dispatcher)


def install(
    core: Installer,
    data: bytes,
    dispatcher: FilterDispatcher | None,
    previous: FilterDispatcher | None = None,
) -> int:
    """Gives the core ``data`` (IR snapshot bytes) and the ``dispatcher`` of its filters in
    one atomic swap; returns the version.  ``previous``: the dispatcher the core serves now,
    whose failure counts ``dispatcher`` takes over (so ``/stats`` only grows).

    Raises the core's ``SnapshotError``/``CoreError`` when it refuses the snapshot: then the
    core still serves the previous snapshot with ``previous``.  Without filters before or
    after, only the snapshot changes (``apply_snapshot``)."""
    if dispatcher is None and previous is None:
        return core.apply_snapshot(data)
    if dispatcher is not None and previous is not None:
        from meshfast.filters.dispatch import carry_failures

        carry_failures(dispatcher, previous)
    return core.install(data, dispatcher)
