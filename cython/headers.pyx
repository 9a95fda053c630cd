# cython: language_level=3, binding=False, embedsignature=True
"""``Headers`` compiled: the header view Python filters are given, per request.

Same public behaviour as its pure-Python twin ``meshfast.filters.headers.Headers`` (the
test oracle, tests/cython/test_headers_twins.py): same methods, results, ordering,
exceptions and messages.  What is faster here:

* ``_trusted`` allocates one small object (from a free list);
* names are checked against a 128-entry table instead of a regex, and lowercased in C: an
  already lowercase name is used as it is (no ``str.lower()`` call, no new string);
* every scan of the pairs is a C loop that compares exact-``str`` names by length and
  bytes, without touching reference counts.  A pair that is not a tuple of exact ``str``
  (only ``_trusted`` can bring one) takes the twin's Python path, with its semantics.

``binding=False``: methods are C method descriptors, which CPython calls faster than
Cython's function objects.

Built into ``meshfast._core`` by rust/py/build.rs and registered by it as
``meshfast._headers`` (see cython/README.md).
"""

cimport cython
from cpython.object cimport PyObject
from libc.string cimport memcmp

from collections.abc import Mapping

__all__ = ["Headers"]


# Macros on borrowed pointers: the fast paths below run no Python code, so nothing can
# change the list under them and no reference counting is needed.
cdef extern from "Python.h":
    Py_ssize_t list_size "PyList_GET_SIZE" (object)
    PyObject* list_item "PyList_GET_ITEM" (object, Py_ssize_t)
    bint tuple_exact "PyTuple_CheckExact" (PyObject*)
    Py_ssize_t tuple_size "PyTuple_GET_SIZE" (PyObject*)
    PyObject* tuple_item "PyTuple_GET_ITEM" (PyObject*, Py_ssize_t)
    bint str_exact "PyUnicode_CheckExact" (PyObject*)
    bint str_ascii "PyUnicode_IS_ASCII" (PyObject*)
    Py_ssize_t str_len "PyUnicode_GET_LENGTH" (PyObject*)
    int str_kind "PyUnicode_KIND" (PyObject*)
    void* str_data "PyUnicode_DATA" (PyObject*)
    unsigned char* str_bytes "PyUnicode_1BYTE_DATA" (PyObject*)
    str PyUnicode_New(Py_ssize_t, Py_UCS4)
    list PyList_New(Py_ssize_t)
    void list_set "PyList_SET_ITEM" (object, Py_ssize_t, PyObject*)  # steals
    void incref "Py_INCREF" (PyObject*)


# RFC 9110 token characters: what the twin's regex accepts.
cdef bint _TOKEN[128]
for _c in range(128):
    _TOKEN[_c] = chr(_c) in (
        "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    )


cdef str _ascii_lower(str s):
    """``s.lower()`` of an exact, ASCII ``s``: the same object when it has no capital."""
    cdef Py_ssize_t i, n = str_len(<PyObject*>s)
    cdef unsigned char* src = str_bytes(<PyObject*>s)
    cdef unsigned char* dst
    cdef str out
    for i in range(n):
        if c'A' <= src[i] <= c'Z':
            break
    else:
        return s
    out = PyUnicode_New(n, 127)
    dst = str_bytes(<PyObject*>out)
    for i in range(n):
        dst[i] = src[i] + 32 if c'A' <= src[i] <= c'Z' else src[i]
    return out


cdef object _lower(object name):
    """The twin's ``name.lower()``."""
    if type(name) is str and str_ascii(<PyObject*>name):
        return _ascii_lower(<str>name)
    # Not ASCII, a str subclass (its own lower()) or no str (the twin's AttributeError).
    return name.lower()


cdef object _name(object name):
    """A valid name, lowercased (the twin's ``_name``)."""
    cdef Py_UCS4 ch
    if not isinstance(name, str) or len(<str>name) == 0:
        raise ValueError(f"invalid header name {name!r}")
    for ch in <str>name:
        if ch >= 128 or not _TOKEN[ch]:
            raise ValueError(f"invalid header name {name!r}")
    if type(name) is str:
        return _ascii_lower(<str>name)
    return name.lower()


cdef object _value(object value):
    """A valid value, as given (the twin's ``_value``)."""
    cdef Py_UCS4 ch
    if not isinstance(value, str):
        raise TypeError(f"header values are str, got {type(value).__name__}")
    for ch in <str>value:
        if ch == c'\r' or ch == c'\n' or ch == 0:
            raise ValueError(
                f"invalid header value {value!r} (CR, LF and NUL are not allowed)"
            )
    return value


cdef inline bint _str_eq(PyObject* a, PyObject* b) noexcept:
    """``a == b`` of two exact ``str`` (equal strings have the same kind in CPython)."""
    cdef Py_ssize_t n
    if a == b:
        return True
    n = str_len(a)
    if n != str_len(b) or str_kind(a) != str_kind(b):
        return False
    return memcmp(str_data(a), str_data(b), n * str_kind(a)) == 0


cdef inline bint _fast_pair(PyObject* pair, Py_ssize_t size) noexcept:
    """A tuple of ``size`` (at least ``-size``, when negative) items whose name is an
    exact ``str``."""
    if not tuple_exact(pair):
        return False
    if size >= 0 and tuple_size(pair) != size or size < 0 and tuple_size(pair) < -size:
        return False
    return str_exact(tuple_item(pair, 0))


cdef inline list _pairs_of(Headers h):
    if h._pairs is None:  # made by __new__ without __init__, like the twin's
        raise AttributeError("'Headers' object has no attribute '_pairs'")
    return h._pairs


cdef enum Scan:
    FIRST, ALL, ANY


cdef object _scan(list pairs, object key, object default, Scan mode):
    """The twin's ``for n, v in pairs: if n == key``: the first ``v`` (or ``default``),
    every ``v`` (a list), or whether there is one."""
    cdef Py_ssize_t i = 0
    cdef PyObject* pair
    cdef PyObject* k = <PyObject*>key
    cdef bint fast = str_exact(k), hit
    cdef list found = [] if mode == ALL else None
    while i < list_size(pairs):
        pair = list_item(pairs, i)
        if fast and _fast_pair(pair, 2):
            hit = _str_eq(tuple_item(pair, 0), k)
            if hit:
                v = <object>tuple_item(pair, 1)
        else:
            n, v = <object>pair
            hit = n == key
        if hit:
            if mode == FIRST:
                return v
            if mode == ANY:
                return True
            found.append(v)
        i += 1
    if mode == FIRST:
        return default
    if mode == ANY:
        return False
    return found


cdef bint _named(object pair, object key, bint fast) except -1:
    """``not (pair[0] != key)``: the test of the twin's ``set`` and ``remove``."""
    if fast and _fast_pair(<PyObject*>pair, -1):
        return _str_eq(tuple_item(<PyObject*>pair, 0), <PyObject*>key)
    return not (pair[0] != key)


cdef Py_ssize_t _fast_count(list pairs, object key) noexcept:
    """How many pairs ``key`` names, when every pair is a tuple with an exact-``str``
    name and ``key`` is an exact ``str`` (so ``set`` and ``remove`` may run in C), else -1."""
    cdef Py_ssize_t i, count = 0
    cdef PyObject* pair
    if type(key) is not str:
        return -1
    for i in range(list_size(pairs)):
        pair = list_item(pairs, i)
        if not _fast_pair(pair, -1):
            return -1
        if _str_eq(tuple_item(pair, 0), <PyObject*>key):
            count += 1
    return count


cdef list _rebuild(list pairs, object key, object replacement, Py_ssize_t count):
    """A new list of ``pairs`` without those named ``key`` (``count`` of them, from
    ``_fast_count``), with ``replacement`` (unless None) where the first was, or at the
    end.  Runs no Python code between the allocation and the last item set."""
    cdef Py_ssize_t i, j = 0, n = list_size(pairs)
    cdef bint placed = replacement is None
    cdef PyObject* pair
    cdef list out = PyList_New(n - count + (not placed))
    for i in range(n):
        pair = list_item(pairs, i)
        if not _str_eq(tuple_item(pair, 0), <PyObject*>key):
            incref(pair)
            list_set(out, j, pair)
            j += 1
        elif not placed:
            incref(<PyObject*>replacement)
            list_set(out, j, <PyObject*>replacement)
            j += 1
            placed = True
    if not placed:
        incref(<PyObject*>replacement)
        list_set(out, j, <PyObject*>replacement)
    return out


cdef object _twin = None


cdef bint _is_twin(object init) except -1:
    """Is ``init`` a pure-Python ``Headers``?  Imported on first use, not at module init:
    this module is initialised inside ``meshfast._core``'s init, which ``meshfast.filters``
    imports."""
    global _twin
    if _twin is None:
        from meshfast.filters.headers import Headers as twin
        _twin = twin
    return isinstance(init, _twin)


@cython.freelist(16)
cdef class Headers:
    """Case-insensitive, multi-value, ordered HTTP headers: a list of (name, value) pairs.

    Names are kept lowercase.  Mapping-style access sees the first value of a name
    (``headers["x"]``, ``get``); ``getall`` sees every value.  ``headers[name] = value`` and
    ``set`` replace every value of ``name`` (in the place of the first one); ``add`` appends
    one more.  Iterating gives each name once, in order of first appearance; ``items()``
    gives every pair.  Names must be HTTP tokens and values must not hold CR, LF or NUL
    (``ValueError``).
    """

    cdef list _pairs

    def __init__(self, init=None):
        self._pairs = []
        if init is None:
            return
        if isinstance(init, Headers):
            self._pairs = list(_pairs_of(<Headers>init))
            return
        if _is_twin(init):
            # The twin is no Mapping; taken as pairs it would iterate its names.
            self._pairs = init.items()
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        for name, value in pairs:
            self._pairs.append((_name(name), _value(value)))

    @classmethod
    def _trusted(cls, list pairs not None):
        """Wraps pairs from the core (names already lowercase and valid) without copying."""
        cdef Headers h
        if cls is Headers:
            h = Headers.__new__(Headers)
        else:
            h = cls.__new__(cls)
        h._pairs = pairs
        return h

    # --- reading

    def get(self, name, default=None):
        """The first value of ``name``, or ``default``."""
        key = _lower(name)
        return _scan(_pairs_of(self), key, default, FIRST)

    def getall(self, name):
        """Every value of ``name``, in order (empty when absent)."""
        key = _lower(name)
        return _scan(_pairs_of(self), key, None, ALL)

    def __getitem__(self, name):
        key = _lower(name)
        value = _scan(_pairs_of(self), key, None, FIRST)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name):
        if not isinstance(name, str):
            return False
        key = _lower(name)
        return _scan(_pairs_of(self), key, None, ANY)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def keys(self):
        """Each name once, in order of first appearance."""
        return list(dict.fromkeys([n for n, _ in _pairs_of(self)]))

    def items(self):
        """Every (name, value) pair, in order."""
        return list(_pairs_of(self))

    def __eq__(self, other):
        if isinstance(other, Headers):
            return _pairs_of(self) == _pairs_of(<Headers>other)
        return NotImplemented

    # Equal views are mutable: not hashable (as the twin's ``__hash__ = None``).
    __hash__ = None

    def __repr__(self):
        return f"Headers({_pairs_of(self)!r})"

    def copy(self):
        cdef Headers h = Headers.__new__(Headers)
        h._pairs = list(_pairs_of(self))
        return h

    # --- writing

    def add(self, name, value):
        """Appends one more value for ``name``."""
        pair = (_name(name), _value(value))
        _pairs_of(self).append(pair)

    def set(self, name, value):
        """Replaces every value of ``name`` by ``value``, where the first one was (appended
        when absent)."""
        self._set(name, value)

    cdef _set(self, name, value):
        key = _name(name)
        value = _value(value)
        cdef list pairs = _pairs_of(self)
        cdef Py_ssize_t count = _fast_count(pairs, key)
        if count >= 0:
            self._pairs = _rebuild(pairs, key, (key, value), count)
            return
        # The twin's loop, for pairs only _trusted can bring.
        cdef list out = []
        cdef bint fast = type(key) is str, done = False
        cdef Py_ssize_t i = 0
        while i < list_size(pairs):
            pair = <object>list_item(pairs, i)
            if not _named(pair, key, fast):
                out.append(pair)
            elif not done:
                out.append((key, value))
                done = True
            i += 1
        if not done:
            out.append((key, value))
        self._pairs = out

    def __setitem__(self, name, value):
        self._set(name, value)

    def __delitem__(self, name):
        if not self._remove(_lower(name)):
            raise KeyError(name)

    def remove(self, name):
        """Removes every value of ``name``; returns how many there were."""
        return self._remove(_lower(name))

    cdef Py_ssize_t _remove(self, key) except -1:
        cdef list pairs = _pairs_of(self)
        cdef Py_ssize_t count = _fast_count(pairs, key)
        if count >= 0:
            self._pairs = _rebuild(pairs, key, None, count)
            return count
        # The twin's loop, for pairs only _trusted can bring.
        cdef list out = []
        cdef bint fast = type(key) is str
        cdef Py_ssize_t i = 0, before = list_size(pairs)
        while i < list_size(pairs):
            pair = <object>list_item(pairs, i)
            if not _named(pair, key, fast):
                out.append(pair)
            i += 1
        self._pairs = out
        return before - list_size(out)

    def pop(self, name, default=None):
        """Removes every value of ``name`` and returns the first (or ``default``)."""
        key = _lower(name)
        value = _scan(_pairs_of(self), key, default, FIRST)
        self._remove(key)
        return value
