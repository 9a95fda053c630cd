# cython: language_level=3, binding=False, boundscheck=False, wraparound=False
"""The steps every filtered request takes, compiled: ``request_from`` and ``response_from``.

Same behaviour as the pure-Python twin ``meshfast.filters.steps`` (the test oracle,
tests/cython/test_steps_twins.py), which documents them.  What is faster here: the loop,
the checks that a phase returned None and left the headers object and the body as they
were, the budget check and the final answer are C, with the filter's slot read through
typed attribute access instead of a Python frame per helper; every rare case still calls
the same :class:`~meshfast.filters.dispatch.Dispatcher` methods the twin calls.

Built into ``meshfast._core`` by rust/py/build.rs and registered as ``meshfast._steps``.
It imports nothing of the package at import time: the core initialises it before the
package exists, and ``meshfast.filters._impl`` hands it the Headers class.
"""

from time import monotonic

__all__ = ["request_from", "response_from", "use_headers"]

cdef object Headers = type(None)


def use_headers(cls):
    global Headers
    Headers = cls


cdef bint _late(list ran):
    cdef object slot
    for slot in ran:
        if slot.has_response or slot.has_log:
            return True
    return False


def request_from(d, st, Py_ssize_t start):
    cdef list chain = st.chain
    cdef list ran = st.ran
    cdef object request = st.request
    cdef object body_in = st.body_in
    cdef Py_ssize_t i, n = len(chain)
    cdef double began
    cdef object slot, reply, out, headers, body
    for i in range(start, n):
        slot = chain[i]
        if slot.async_request:
            return d._request_async_from(st, i)
        ran.append(slot)
        began = monotonic()
        try:
            reply = slot.filter.on_request(request)
            if (
                reply is not None
                or type(request.headers) is not Headers
                or request.body is not body_in
            ):
                reply = d._after_request(st, reply)
            if monotonic() - began > <double>slot.timeout:
                d._within_budget(slot, began)
        except Exception as exc:
            return d._error(st, slot, "on_request", exc)
        if reply is not None:
            return d._respond(st, slot, reply)
    out = request.headers.items()
    headers = None if out == st.headers_in else out
    body = None if request.body == body_in else request.body
    if headers is None and body is None and not _late(ran):
        return None
    return ("continue", headers, body, st)


def response_from(d, st, list order, Py_ssize_t start):
    assert st.response is not None
    response, headers_in, body_in = st.response
    cdef object request = st.request
    cdef Py_ssize_t i, n = len(order)
    cdef double began
    cdef object slot, out, headers, body
    for i in range(start, n):
        slot = order[i]
        if slot.async_response:
            return d._response_async_from(st, order, i)
        began = monotonic()
        try:
            slot.filter.on_response(request, response)
            if type(response.headers) is not Headers or response.body is not body_in:
                d._after_response(st, response)
            if monotonic() - began > <double>slot.timeout:
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
