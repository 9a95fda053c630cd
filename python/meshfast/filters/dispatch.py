"""The object the core calls for routes with filters (``_core.FilterDispatcher``).

``on_request(filters, info, headers)`` runs the route's filters in order and returns:

* ``None``: continue, headers unchanged, and no filter has ``on_response``/``on_log`` to run;
* ``("continue", headers, state)``: continue with ``headers`` (every request header);
* ``("respond", status, headers, body, state)``: a filter answered locally.

``on_response(filters, info, status, headers, state)`` runs ``on_response`` of the filters
whose ``on_request`` ran, in reverse order, then their ``on_log``; it returns None (headers
unchanged) or every response header.  The core does not call ``on_response`` after a local
reply: the filters' ``on_log`` runs before ``on_request`` returns ``"respond"`` instead.

``state`` is opaque to the core: it carries the :class:`~meshfast.filters.Request` (headers
and ``state`` dict) and the filters that ran, so ``on_response`` needs no lookup by id.

An exception in ``on_request``/``on_response`` is counted in :attr:`Dispatcher.errors` under
the filter's name and propagates (the core answers the route's failure status); one in
``on_log`` is counted only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from meshfast.filters.api import Headers, HttpFilter, LogInfo, Request, Response

if TYPE_CHECKING:
    from meshfast._core import FilterDispatcher
    from meshfast.config.model import Config
    from meshfast.control.sidecar import CoreLike

__all__ = ["Dispatcher", "apply_with_filters", "build_dispatcher"]

HeaderList = list[tuple[str, str]]
RequestInfo = tuple[str, str, str, str, str, str, str, str]
RequestResult = None | tuple[str, HeaderList, object] | tuple[str, int, HeaderList, bytes, object]

log = logging.getLogger("meshfast.filters")


def _overrides(f: HttpFilter, phase: str) -> bool:
    return getattr(type(f), phase) is not getattr(HttpFilter, phase)


class _RequestState:
    __slots__ = ("ran", "replied_by", "request", "started")

    def __init__(self, request: Request, started: float) -> None:
        self.request = request
        self.ran: list[HttpFilter] = []
        self.started = started
        self.replied_by: str | None = None


class Dispatcher:
    """Runs filter instances by id; ``errors`` counts exceptions per filter name."""

    def __init__(self, filters: Mapping[int, HttpFilter]) -> None:
        self.filters = dict(filters)
        for i, f in self.filters.items():
            if not f.name:
                f.name = f"{type(f).__qualname__}#{i}"
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._late = {
            id(f)
            for f in self.filters.values()
            if _overrides(f, "on_response") or _overrides(f, "on_log")
        }

    def _failed(self, name: str, phase: str, exc: BaseException) -> None:
        with self._lock:
            count = self.errors.get(name, 0) + 1
            self.errors[name] = count
        if count == 1:
            log.warning("filter %s raised in %s", name, phase, exc_info=exc)
        else:
            log.debug("filter %s raised in %s (%d errors)", name, phase, count, exc_info=exc)

    def _log(self, st: _RequestState, response: Response) -> None:
        """``on_log`` of the filters that ran, in reverse order; errors are only counted."""
        duration = (time.monotonic() - st.started) * 1000.0
        for f in reversed(st.ran):
            if not _overrides(f, "on_log"):
                continue
            info = LogInfo(f.name, duration, st.replied_by is not None, st.replied_by)
            try:
                f.on_log(st.request, response, info)
            except Exception as exc:
                self._failed(f.name, "on_log", exc)

    def _chain(self, filters: tuple[int, ...]) -> list[HttpFilter]:
        chain = []
        for i in filters:
            f = self.filters.get(i)
            if f is None:
                exc = LookupError(f"no filter with id {i}")
                self._failed(f"#{i}", "on_request", exc)
                raise exc
            chain.append(f)
        return chain

    def on_request(
        self, filters: tuple[int, ...], info: RequestInfo, headers: HeaderList
    ) -> RequestResult:
        if not filters:
            return None
        chain = self._chain(filters)
        request = Request(*info, headers=Headers._trusted(list(headers)))
        st = _RequestState(request, time.monotonic())
        for f in chain:
            st.ran.append(f)
            try:
                reply = f.on_request(request)
                if reply is not None and not isinstance(reply, Response):
                    raise TypeError(
                        f"on_request must return None or a Response, got {type(reply).__name__}"
                    )
                if reply is not None and not 200 <= reply.status <= 599:
                    raise ValueError(f"a local reply's status must be 200-599, got {reply.status}")
                request.headers = _coerce(request.headers)
            except Exception as exc:
                self._failed(f.name, "on_request", exc)
                raise
            if reply is not None:
                st.replied_by = f.name
                self._log(st, reply)
                return ("respond", reply.status, reply.headers.items(), reply.body, st)
        out = request.headers.items()
        if out == headers and not any(id(f) in self._late for f in chain):
            return None
        return ("continue", out, st)

    def on_response(
        self,
        filters: tuple[int, ...],
        info: RequestInfo,
        status: int,
        headers: HeaderList,
        state: object,
    ) -> HeaderList | None:
        if isinstance(state, _RequestState):
            st = state
        else:  # on_request was not called through this dispatcher: start afresh
            st = _RequestState(Request(*info), time.monotonic())
            st.ran = [f for f in (self.filters.get(i) for i in filters) if f is not None]
        ran = [f for f in st.ran if _overrides(f, "on_response") or _overrides(f, "on_log")]
        if not ran:
            return None
        request = st.request
        response = Response(status, Headers._trusted(list(headers)))
        for f in reversed(ran):
            try:
                f.on_response(request, response)
                response.headers = _coerce(response.headers)
            except Exception as exc:
                self._failed(f.name, "on_response", exc)
                raise
        self._log(st, response)
        out = response.headers.items()
        return None if out == headers else out


def _coerce(h: object) -> Headers:
    """A filter may have assigned a mapping or (name, value) pairs instead of Headers."""
    if isinstance(h, Headers):
        return h
    if h is None or isinstance(h, str | bytes):
        raise TypeError(f"headers must be Headers, a mapping or pairs, got {type(h).__name__}")
    return Headers(h)  # type: ignore[arg-type]


def build_dispatcher(config: Config) -> Dispatcher | None:
    """The dispatcher for ``config``'s HttpFilters, by the ids :func:`compile_config` gives
    them; None when it has none.  Filters ``load_config`` did not construct (a Config built
    by hand) are loaded here; a problem raises ``ConfigError``."""
    from meshfast.config import http_filter
    from meshfast.config.model import ConfigError, Problem
    from meshfast.filters import registry

    refs = http_filter.numbered(config.resources)
    if not refs:
        return None
    instances: dict[int, HttpFilter] = {}
    problems: list[Problem] = []
    for i, res in refs:
        key = (res.metadata.namespace, res.metadata.name)
        f = config.filters.get(key)
        if f is None:
            source = config.sources.get(("HttpFilter", *key), "<config>")
            f, issues = registry.load(
                res.spec.python,
                res.spec.config,
                folder=registry.folder_of(source),
                name=http_filter.ref_name(res),
            )
            problems.extend(Problem(source, 1, "HttpFilter", key[1], p, m) for p, m in issues)
        if f is not None:
            instances[i] = f
    if problems:
        raise ConfigError(problems)
    return Dispatcher(instances)


def apply_with_filters(
    core: CoreLike,
    snapshot: bytes,
    filters: FilterDispatcher | None,
    previous: FilterDispatcher | None = None,
) -> int:
    """``core.set_filter_dispatcher(filters)``, then ``core.apply_snapshot(snapshot)`` (the
    snapshot whose filter ids ``filters`` matches); if the core rejects the snapshot,
    ``previous`` is set back and the error propagates.

    Error counts carry over from ``previous`` (by filter name), so ``/stats`` counters
    only grow across reloads."""
    if isinstance(filters, Dispatcher) and isinstance(previous, Dispatcher):
        for name, count in previous.errors.items():
            filters.errors[name] = filters.errors.get(name, 0) + count
    core.set_filter_dispatcher(filters)
    try:
        return core.apply_snapshot(snapshot)
    except BaseException:
        core.set_filter_dispatcher(previous)
        raise
