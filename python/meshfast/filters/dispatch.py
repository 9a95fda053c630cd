"""The object the core calls for routes with filters (``_core.FilterDispatcher``).

``on_request(filters, info, headers, body)`` runs the route's filters in order (``body``:
the request body when a filter on the route reads it, else None) and returns:

* ``None``: continue unchanged, and no filter has a later phase to run;
* ``("continue", headers | None, body | None, state)``: continue, with every request header
  and/or the new body where a filter changed them;
* ``("respond", status, headers, body, state)``: a filter answered locally;
* ``("error", status, message, timeout)``: a filter raised or overran its time budget; the
  core answers ``status`` (the filter's ``failureStatus``) with flag ``FF``;
* ``("async", runner)``: a phase is ``async def``: the core calls ``runner(completion)``
  and waits (without blocking its worker) for ``completion.set(...)`` with one of the above.

``on_response(filters, info, status, headers, body, state)`` runs ``on_response`` of the
filters whose ``on_request`` ran, in reverse order, then their ``on_log``; it returns None,
``("continue", headers | None, body | None)``, an ``"error"`` or an ``"async"`` tuple.  The core
does not call it after a local reply: the filters' ``on_log`` runs before ``"respond"`` is
returned instead.  ``on_log(filters, info, status, flags, state)`` is the core telling how a
request ended that never got a response phase (no healthy upstream, a timeout...).

``state`` is opaque to the core: it carries the request, the filters that ran and what they
were given, so later phases need no lookup.

Time budgets: an ``async`` phase is cancelled when it overruns its filter's ``timeout``; a
sync phase cannot be interrupted (it holds the worker), so one that overran fails its request
after it returns.  Both count in :attr:`Dispatcher.timeouts`; exceptions count in
:attr:`Dispatcher.errors`.  What ``on_log`` raises is counted, never answered.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from meshfast.filters._impl import steps
from meshfast.filters.api import Headers, HttpFilter, LogInfo, Request, Response

if TYPE_CHECKING:
    from meshfast.config.model import Config
    from meshfast.filters.loop import TrioLoop

__all__ = [
    "Dispatcher",
    "FilterSettings",
    "build_dispatcher",
    "carry_failures",
    "failure_counts",
]

HeaderList = list[tuple[str, str]]
RequestInfo = tuple[str, str, str, str, str, str, str, str, str]  # _core.RequestInfo
Result = tuple[Any, ...] | None

log = logging.getLogger("meshfast.filters")

# Filter lists (one per route, at most) whose slots are looked up once.
MAX_CHAINS = 4096

# What an async phase answers if its task ends without a result (the loop shut down).
_CANCELLED = ("error", None, "the filter's task was cancelled", False)


class Completion(Protocol):
    """``_core.Completion``: where an async phase's answer goes."""

    def set(self, result: Result, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class FilterSettings:
    """What the resource says about running a filter: its time budget per phase (seconds)
    and the status that answers a request it failed."""

    timeout: float = 1.0
    failure_status: int = 500


class FilterTimeout(Exception):
    """A phase overran its filter's time budget."""


def _overrides(f: HttpFilter, phase: str) -> bool:
    return getattr(type(f), phase) is not getattr(HttpFilter, phase)


def _is_async(f: HttpFilter, phase: str) -> bool:
    return inspect.iscoroutinefunction(getattr(type(f), phase))


class _Slot:
    """One filter with its settings and what its class overrides, worked out once."""

    __slots__ = (
        "async_log",
        "async_request",
        "async_response",
        "failure_status",
        "filter",
        "has_log",
        "has_response",
        "name",
        "timeout",
    )

    def __init__(self, f: HttpFilter, settings: FilterSettings) -> None:
        self.filter = f
        self.name = f.name
        self.timeout = settings.timeout
        self.failure_status = settings.failure_status
        self.has_response = _overrides(f, "on_response")
        self.has_log = _overrides(f, "on_log")
        self.async_request = _is_async(f, "on_request")
        self.async_response = _is_async(f, "on_response")
        self.async_log = _is_async(f, "on_log")


class _RequestState:
    __slots__ = (
        "body_in",
        "chain",
        "headers_in",
        "ran",
        "replied_by",
        "request",
        "response",
        "started",
    )

    def __init__(
        self, request: Request, chain: list[_Slot], headers: HeaderList, body: bytes | None
    ) -> None:
        self.request = request
        self.chain = chain
        self.headers_in = headers
        self.body_in = body
        self.ran: list[_Slot] = []
        self.started = time.monotonic()
        self.replied_by: str | None = None
        self.response: tuple[Response, HeaderList, bytes | None] | None = None


def _as_body(body: object, what: str) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"{what} must be bytes or str, got {type(body).__name__}")


def _coerce(h: object) -> Headers:
    """A filter may have assigned a mapping or (name, value) pairs instead of Headers."""
    if isinstance(h, Headers):
        return h
    if h is None or isinstance(h, str | bytes):
        raise TypeError(f"headers must be Headers, a mapping or pairs, got {type(h).__name__}")
    return Headers(h)  # type: ignore[arg-type]


def _check_reply(reply: object) -> Response | None:
    if reply is not None and not isinstance(reply, Response):
        raise TypeError(f"on_request must return None or a Response, got {type(reply).__name__}")
    if reply is not None and not 200 <= reply.status <= 599:
        raise ValueError(f"a local reply's status must be 200-599, got {reply.status}")
    return reply


class Dispatcher:
    """Runs filter instances by id; ``errors`` and ``timeouts`` count failures per filter
    name.  ``settings`` (by id) default to :class:`FilterSettings`; async phases need a
    :class:`~meshfast.filters.loop.TrioLoop` (:meth:`bind`)."""

    def __init__(
        self,
        filters: Mapping[int, HttpFilter],
        settings: Mapping[int, FilterSettings] | None = None,
        *,
        loop: TrioLoop | None = None,
    ) -> None:
        self.filters = dict(filters)
        for i, f in self.filters.items():
            if not f.name:
                f.name = f"{type(f).__qualname__}#{i}"
        given = settings or {}
        self._slots = {i: _Slot(f, given.get(i, FilterSettings())) for i, f in self.filters.items()}
        self.errors: dict[str, int] = {}
        self.timeouts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = loop
        self._chains: dict[tuple[int, ...], list[_Slot]] = {}

    def bind(self, loop: TrioLoop | None) -> None:
        """The Trio loop async phases run on (None: they fail, as without a loop)."""
        self._loop = loop

    # === bookkeeping ===

    def _failed(self, name: str, phase: str, exc: BaseException) -> None:
        timeout = isinstance(exc, FilterTimeout)
        with self._lock:
            counts = self.timeouts if timeout else self.errors
            count = counts.get(name, 0) + 1
            counts[name] = count
        level = logging.WARNING if count == 1 else logging.DEBUG
        log.log(level, "filter %s failed in %s (%d so far)", name, phase, count, exc_info=exc)

    def _error(
        self, st: _RequestState | None, slot: _Slot | None, phase: str, exc: Exception
    ) -> tuple[str, int | None, str, bool]:
        """Counts the failure, logs the request as failed, and returns the ``"error"`` tuple."""
        name = slot.name if slot is not None else "<dispatcher>"
        self._failed(name, phase, exc)
        status = slot.failure_status if slot is not None else None
        if st is not None and phase != "on_log":
            self._log(st, Response(status or 500), flags="FF")
        return (
            "error",
            status,
            f"{name}: {type(exc).__name__}: {exc}",
            isinstance(exc, FilterTimeout),
        )

    def _chain(self, filters: tuple[int, ...]) -> list[_Slot]:
        chain = self._chains.get(filters)
        if chain is not None:
            return chain
        chain = []
        for i in filters:
            slot = self._slots.get(i)
            if slot is None:
                raise LookupError(f"no filter with id {i}")
            chain.append(slot)
        # One entry per distinct filter list of the snapshot's routes; bounded anyway.
        if len(self._chains) < MAX_CHAINS:
            self._chains[filters] = chain
        return chain

    def _go_async(
        self,
        st: _RequestState,
        slot: _Slot,
        phase: str,
        task: Callable[[Completion], Awaitable[None]],
    ) -> Result:
        loop = self._loop
        if loop is None:
            exc = RuntimeError("async filter phases need the sidecar's Trio loop")
            return self._error(st, slot, phase, exc)

        def runner(completion: Completion) -> None:
            def refused(exc: BaseException) -> None:
                err = RuntimeError(f"the Trio loop refused the task: {exc!r}")
                completion.set(self._error(st, slot, phase, err))

            loop.spawn(task, completion, on_refused=refused)

        return ("async", runner)

    # === request phase ===

    def on_request(
        self,
        filters: tuple[int, ...],
        info: RequestInfo,
        headers: HeaderList,
        body: bytes | None = None,
    ) -> Result:
        if not filters:
            return None
        try:
            chain = self._chain(filters)
        except LookupError as exc:
            return self._error(None, None, "on_request", exc)
        request = Request(*info, headers=Headers._trusted(list(headers)), body=body)
        return steps.request_from(self, _RequestState(request, chain, headers, body), 0)

    def _request_async_from(self, st: _RequestState, start: int) -> Result:
        """The request phases from ``start`` on, the first of them async: on the Trio loop."""
        task = functools.partial(self._request_async, st, start)
        return self._go_async(st, st.chain[start], "on_request", task)

    async def _request_async(self, st: _RequestState, start: int, completion: Completion) -> None:
        import trio

        result: Result = _CANCELLED
        try:
            for i in range(start, len(st.chain)):
                slot = st.chain[i]
                st.ran.append(slot)
                began = time.monotonic()
                try:
                    with trio.fail_after(slot.timeout):
                        reply = slot.filter.on_request(st.request)
                        if inspect.isawaitable(reply):
                            reply = await reply
                    reply = self._after_request(st, reply)
                    self._within_budget(slot, began)
                except trio.TooSlowError:
                    exc = FilterTimeout(f"on_request took more than {slot.timeout:g}s")
                    result = self._error(st, slot, "on_request", exc)
                    return
                except Exception as exc:
                    result = self._error(st, slot, "on_request", exc)
                    return
                if reply is not None:
                    result = self._respond(st, slot, reply)
                    return
            # Every phase ran: the steps work out the answer (they have none left to run).
            result = steps.request_from(self, st, len(st.chain))
        finally:
            completion.set(result)

    def _after_request(self, st: _RequestState, reply: object) -> Response | None:
        checked = _check_reply(reply)
        st.request.headers = _coerce(st.request.headers)
        body = _as_body(st.request.body, "request.body")
        if body is not None and st.body_in is None:
            raise TypeError(
                "request.body can be replaced only by filters that declare request_body_limit"
            )
        st.request.body = body
        return checked

    @staticmethod
    def _within_budget(slot: _Slot, began: float) -> None:
        took = time.monotonic() - began
        if took > slot.timeout:
            raise FilterTimeout(f"took {took:.3f}s, over its {slot.timeout:g}s budget")

    def _respond(self, st: _RequestState, slot: _Slot, reply: Response) -> Result:
        st.replied_by = slot.name
        self._log(st, reply)
        return ("respond", reply.status, reply.headers.items(), reply.body or b"", st)

    # === response phase ===

    def on_response(
        self,
        filters: tuple[int, ...],
        info: RequestInfo,
        status: int,
        headers: HeaderList,
        body: bytes | None = None,
        state: object = None,
    ) -> Result:
        st = self._state(filters, info, state)
        if not any(s.has_response or s.has_log for s in st.ran):
            return None
        response = Response(status, Headers._trusted(list(headers)))
        response.body = body
        st.response = (response, headers, body)
        return steps.response_from(self, st, [s for s in reversed(st.ran) if s.has_response], 0)

    def _state(self, filters: tuple[int, ...], info: RequestInfo, state: object) -> _RequestState:
        if isinstance(state, _RequestState):
            return state
        # on_request did not run through this dispatcher: start afresh.
        slots = [s for s in (self._slots.get(i) for i in filters) if s is not None]
        st = _RequestState(Request(*info), slots, [], None)
        st.ran = list(slots)
        return st

    def _response_async_from(self, st: _RequestState, order: list[_Slot], start: int) -> Result:
        """The response phases of ``order`` from ``start`` on, the first of them async."""
        task = functools.partial(self._response_async, st, order, start)
        return self._go_async(st, order[start], "on_response", task)

    async def _response_async(
        self, st: _RequestState, order: list[_Slot], start: int, completion: Completion
    ) -> None:
        import trio

        assert st.response is not None
        response = st.response[0]
        result: Result = _CANCELLED
        try:
            for i in range(start, len(order)):
                slot = order[i]
                began = time.monotonic()
                try:
                    with trio.fail_after(slot.timeout):
                        done = slot.filter.on_response(st.request, response)
                        if inspect.isawaitable(done):
                            await done
                    self._after_response(st, response)
                    self._within_budget(slot, began)
                except trio.TooSlowError:
                    exc = FilterTimeout(f"on_response took more than {slot.timeout:g}s")
                    result = self._error(st, slot, "on_response", exc)
                    return
                except Exception as exc:
                    result = self._error(st, slot, "on_response", exc)
                    return
            result = steps.response_from(self, st, order, len(order))
        finally:
            completion.set(result)

    def _after_response(self, st: _RequestState, response: Response) -> None:
        assert st.response is not None
        response.headers = _coerce(response.headers)
        body = _as_body(response.body, "response.body")
        if body is not None and st.response[2] is None:
            raise TypeError(
                "response.body can be replaced only by filters that declare response_body_limit"
            )
        response.body = body

    # === log phase ===

    def on_log(
        self, filters: tuple[int, ...], info: RequestInfo, status: int, flags: str, state: object
    ) -> None:
        """The core answered the request itself after the request phase (``flags``: why)."""
        self._log(self._state(filters, info, state), Response(status), flags=flags)

    def _log(self, st: _RequestState, response: Response, *, flags: str = "") -> None:
        """``on_log`` of the filters that ran, in reverse order; errors are only counted.
        Async ones run on the Trio loop, fire and forget, within their budget."""
        duration = (time.monotonic() - st.started) * 1000.0
        for slot in reversed(st.ran):
            if not slot.has_log:
                continue
            info = LogInfo(slot.name, duration, st.replied_by is not None, st.replied_by, flags)
            if slot.async_log:
                if self._loop is not None:
                    self._loop.spawn(
                        self._log_async,
                        slot,
                        st.request,
                        response,
                        info,
                        on_refused=functools.partial(self._failed, slot.name, "on_log"),
                    )
                continue
            try:
                slot.filter.on_log(st.request, response, info)
            except Exception as exc:
                self._failed(slot.name, "on_log", exc)

    async def _log_async(
        self, slot: _Slot, request: Request, response: Response, info: LogInfo
    ) -> None:
        import trio

        try:
            with trio.fail_after(slot.timeout):
                await slot.filter.on_log(request, response, info)  # type: ignore[misc]
        except trio.TooSlowError:
            self._failed(slot.name, "on_log", FilterTimeout("on_log overran its budget"))
        except Exception as exc:
            self._failed(slot.name, "on_log", exc)


def build_dispatcher(config: Config) -> Dispatcher | None:
    """The dispatcher for ``config``'s HttpFilters, by the ids :func:`compile_config` gives
    them; None when it has none.  Filters the config has no instance of (loaded without a
    filter loader, or built by hand) are loaded here; a problem raises ``ConfigError``."""
    from meshfast.config import http_filter
    from meshfast.filters import registry

    refs = http_filter.numbered(config.resources)
    if not refs:
        return None
    config = registry.load_missing(config)
    instances: dict[int, HttpFilter] = {}
    settings: dict[int, FilterSettings] = {}
    for i, res in refs:
        instances[i] = config.filters[(res.metadata.namespace, res.metadata.name)]
        settings[i] = FilterSettings(http_filter.timeout_ms(res) / 1000.0, res.spec.failure_status)
    return Dispatcher(instances, settings)


def carry_failures(new: object, previous: object) -> None:
    """Adds ``previous``'s failure counts to ``new``'s, by filter name (both
    :class:`Dispatcher`, else nothing), so ``/stats`` counters only grow across reloads.
    Called before ``new`` is installed: if the core refuses it, it is simply dropped."""
    if not isinstance(new, Dispatcher) or not isinstance(previous, Dispatcher) or new is previous:
        return
    for mine, theirs in ((new.errors, previous.errors), (new.timeouts, previous.timeouts)):
        for name, count in theirs.items():
            mine[name] = mine.get(name, 0) + count


def failure_counts(dispatcher: object) -> dict[str, dict[str, int]]:
    """``{filter name: {"errors": n, "timeouts": m}}`` for the filters of ``dispatcher`` (a
    :class:`Dispatcher`, else nothing) that failed at least once, sorted by name: what
    ``/stats`` shows under ``filters``."""
    counts: dict[str, dict[str, int]] = {}
    if isinstance(dispatcher, Dispatcher):
        for kind, by_name in (("errors", dispatcher.errors), ("timeouts", dispatcher.timeouts)):
            for name, n in by_name.items():
                counts.setdefault(name, {"errors": 0, "timeouts": 0})[kind] = n
    return dict(sorted(counts.items()))
