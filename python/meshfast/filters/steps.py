"""The steps every filtered request takes, in pure Python: the twin (and test oracle) of
``cython/steps.pyx``, which the dispatcher uses unless ``MESHFAST_PURE_PYTHON=1``.

``request_from(d, st, start)`` runs the request phases of ``st.chain`` from ``start`` on;
``response_from(d, st, order, start)`` the response phases of ``order``.  Both answer what
:mod:`meshfast.filters.dispatch` documents.  They do the common work themselves — call the
phase, see that it returned None and left the headers object and the body as they were,
check the time budget, work out the answer — and leave every rare case (an async phase, a
local reply, changed headers or body to check, an exception, an overrun) to the methods of
the :class:`~meshfast.filters.dispatch.Dispatcher` ``d``.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshfast.filters.dispatch import Dispatcher, _RequestState, _Slot

__all__ = ["request_from", "response_from", "use_headers"]

Result = tuple[Any, ...] | None

# The Headers class the package uses (meshfast.filters._impl sets it).
Headers: type = type(None)


def use_headers(cls: type) -> None:
    global Headers
    Headers = cls


def request_from(d: Dispatcher, st: _RequestState, start: int) -> Result:
    chain = st.chain
    request = st.request
    body_in = st.body_in
    for i in range(start, len(chain)):
        slot = chain[i]
        if slot.async_request:
            return d._request_async_from(st, i)
        st.ran.append(slot)
        began = monotonic()
        try:
            reply = slot.filter.on_request(request)
            if (
                reply is not None
                or type(request.headers) is not Headers
                or request.body is not body_in
            ):
                reply = d._after_request(st, reply)
            if monotonic() - began > slot.timeout:
                d._within_budget(slot, began)
        except Exception as exc:
            return d._error(st, slot, "on_request", exc)
        if reply is not None:
            return d._respond(st, slot, reply)
    out = request.headers.items()
    headers = None if out == st.headers_in else out
    body = None if request.body == body_in else request.body
    if headers is None and body is None and not any(s.has_response or s.has_log for s in st.ran):
        return None
    return ("continue", headers, body, st)


def response_from(d: Dispatcher, st: _RequestState, order: list[_Slot], start: int) -> Result:
    assert st.response is not None
    response, headers_in, body_in = st.response
    request = st.request
    for i in range(start, len(order)):
        slot = order[i]
        if slot.async_response:
            return d._response_async_from(st, order, i)
        began = monotonic()
        try:
            slot.filter.on_response(request, response)
            if type(response.headers) is not Headers or response.body is not body_in:
                d._after_response(st, response)
            if monotonic() - began > slot.timeout:
                d._within_budget(slot, began)
        except Exception as exc:
            return d._error(st, slot, "on_response", exc)
    d._log(st, response)
    out = response.headers.items()
    headers = None if out == headers_in else out
    body = None if response.body == body_in else response.body
    if headers is None and body is None:
        return None
    return ("continue", headers, body)
